"""The processes of a launched run (``accelerate launch`` / ``torchrun``, DDP): who this one is, its share
of a list of work, and the collectives that put the shares back together.

Without a process group every function treats this process as the only one, so the same code runs
unchanged in one process. Shares are strided (``items[rank::size]``), so they differ by at most one
item and every process can compute every other's share.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def _group() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's index (0 without a process group)."""
    import torch.distributed as dist

    return dist.get_rank() if _group() else 0


def size() -> int:
    """How many processes share the work (1 without a process group)."""
    import torch.distributed as dist

    return dist.get_world_size() if _group() else 1


def is_main() -> bool:
    """The process that writes the run directory."""
    return rank() == 0


def share(items: list[T]) -> list[T]:
    """This process's part of ``items``: every ``size()``-th item from its rank."""
    return items[rank()::size()]


def gather(value: T) -> list[T]:
    """``value`` from every process, in rank order (on every process)."""
    if size() == 1:
        return [value]
    import torch.distributed as dist

    values: list = [None] * size()
    dist.all_gather_object(values, value)
    return values


def unshare(parts: list[list[T]]) -> list[T]:
    """The inverse of :func:`share`: the per-rank parts (from :func:`gather`) back in the original order."""
    total = sum(len(p) for p in parts)
    return [parts[i % len(parts)][i // len(parts)] for i in range(total)]


def broadcast(value: T) -> T:
    """The main process's ``value`` on every process."""
    if size() == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait until every process gets here."""
    if size() > 1:
        import torch.distributed as dist

        dist.barrier()
