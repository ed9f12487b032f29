"""The run directory, one owner for train and check: creation, the lock, the run's settings,
checkpoint publication, soundness and completeness, the metrics log, a full disk.

Layout (docs/formats.md)::

    runs/<spec>-<YYYYmmdd-HHMMSS>/
      config.json  manifest.json  data/  metrics.jsonl  checkpoint-<global step>/  .lock  .staging/
      checkpoint-<step>-x<s>/   (train.strengths: the last checkpoint's update scaled by s; no trainer state)

A trainer writes each checkpoint into ``.staging/<stage>/checkpoint-<stage step>/``; once every file
is there it is renamed to ``checkpoint-<global step>/`` and ``behavio.json`` (``{"spec_hash", "step",
"stage", "metrics", "base_model", "complete": true}``) is written last, atomically. A checkpoint is
broken, with the file named, when a file is missing, empty, not valid JSON, a truncated safetensors,
or ``behavio.json`` lacks ``"complete": true``; it is never loaded. Weights load from safetensors only.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from behavio.errors import BehavioError
from behavio.jsonio import read_json, write_json

__all__ = ["META", "ADAPTER_WEIGHTS", "ADAPTER_CONFIG", "Checkpoint", "read_json", "write_json", "new_run_dir",
           "RunLock", "run_base_model", "run_fold_system", "publish_checkpoint", "inspect_checkpoint",
           "scan_checkpoints", "find_checkpoints", "complete_checkpoints", "newest_complete", "is_checkpoint_name",
           "is_scaled_copy",
           "incomplete_checkpoints", "content_hash", "check_safetensors", "MetricsLog", "check_disk_space",
           "DiskFull", "disk_full"]

META = "behavio.json"
LOCK = ".lock"
STAGING = ".staging"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
TRAINER_STATE = "trainer_state.json"  # what --resume needs besides the adapter
_NAME = re.compile(r"^checkpoint-(\d+)(-x\d+(?:\.\d+)?)?$")  # -x0.8: a weaker copy (train/strengths.py)


def is_checkpoint_name(name: str) -> bool:
    """``checkpoint-139`` or a weaker copy's ``checkpoint-139-x0.8``."""
    return _NAME.match(name) is not None


def is_scaled_copy(name: str) -> bool:
    """``checkpoint-139-x0.8``: a copy train.strengths wrote, not a checkpoint the trainer saved."""
    m = _NAME.match(name)
    return bool(m and m.group(2))


def new_run_dir(runs_root: Path, spec_id: str) -> Path:
    """Create and return ``runs_root/<spec>-<timestamp>`` (a ``-2``, ``-3``... suffix if taken)."""
    runs_root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = runs_root / (f"{spec_id}-{stamp}" if n == 1 else f"{spec_id}-{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise BehavioError(f"{runs_root}: cannot create a run directory for {spec_id}")


# ---------------------------------------------------------------------------------------------
# Lock
# ---------------------------------------------------------------------------------------------


def _process_start(pid: int) -> float | None:
    """Start time of a live process ``pid``, or None when there is none."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


class RunLock:
    """``.lock`` in a run directory, held by one live process; a lock left by a dead one is taken over."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK
        self.held = False

    def acquire(self) -> RunLock:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _process_start(os.getpid()),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_if_live()
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise BehavioError(f"{self.path}: could not take the run lock (another process keeps taking it)")

    def _refuse_if_live(self) -> None:
        try:
            owner = json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return  # half-written or vanished: treat as stale
        pid, host = owner.get("pid"), owner.get("host")
        if host and host != socket.gethostname():
            raise BehavioError(f"{self.path.parent}: held by a run on host {host} (pid {pid}); "
                               f"if that run is gone, delete {self.path}")
        started = _process_start(pid) if isinstance(pid, int) else None
        if started is not None and (owner.get("started") is None or abs(started - owner["started"]) < 1.0):
            raise BehavioError(f"{self.path.parent}: another live run holds it (pid {pid}, since {owner.get('time')}); "
                               "wait for it to finish or start a new run")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """One ``checkpoint-<step>/`` directory; ``problem`` is None when it can be loaded."""

    path: Path
    step: int
    stage: str | None = None
    meta: dict = field(default_factory=dict)
    problem: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def broken(self) -> bool:
        return self.problem is not None

    @property
    def strength(self) -> float:
        """The share of its training's update this adapter applies (1; less for a weaker copy)."""
        value = self.meta.get("strength", 1.0)
        return float(value) if isinstance(value, (int, float)) else 1.0

    @property
    def resumable(self) -> bool:
        """Sound, with the trainer state ``--resume`` continues from."""
        return not self.broken and (self.path / TRAINER_STATE).is_file()


def staging_dir(run_dir: Path, stage: str) -> Path:
    return run_dir / STAGING / stage


def publish_checkpoint(run_dir: Path, trainer_dir: Path, step: int, meta: dict) -> Path:
    """Move a checkpoint the trainer wrote to ``checkpoint-<step>`` and mark it complete (``behavio.json`` last)."""
    target = run_dir / f"checkpoint-{step}"
    if target.exists():  # an incomplete leftover of a crashed attempt at this step
        shutil.rmtree(target)
    os.replace(trainer_dir, target)
    write_json(target / META, {**meta, "step": step, "complete": True})
    return target


def check_safetensors(path: Path) -> None:
    """Raise BehavioError unless ``path`` is a complete safetensors file (header and data sizes agree)."""
    if not path.is_file():
        bin_file = path.with_name("adapter_model.bin")
        extra = f" ({bin_file.name} is there, but only safetensors are loaded)" if bin_file.exists() else ""
        raise BehavioError(f"{path}: missing{extra}")
    size = path.stat().st_size
    if size == 0:
        raise BehavioError(f"{path}: empty file (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise BehavioError(f"{path}: truncated safetensors ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise BehavioError(f"{path}: truncated safetensors (header of {n} bytes, file of {size})")
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BehavioError(f"{path}: corrupt safetensors header") from None
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    expected = 8 + n + max(ends, default=0)
    if size < expected:
        raise BehavioError(f"{path}: truncated safetensors ({size} bytes, expected {expected})")
    if not ends:
        raise BehavioError(f"{path}: safetensors holds no tensors")


def inspect_checkpoint(path: Path) -> Checkpoint:
    """A Checkpoint for ``path``; any problem is recorded, never raised."""
    m = _NAME.match(path.name)
    ckpt = Checkpoint(path=path, step=int(m.group(1)) if m else -1)
    try:
        meta = read_json(path / META)
        ckpt.meta = meta
        ckpt.stage = meta.get("stage")
        if isinstance(meta.get("step"), int):
            ckpt.step = meta["step"]
        if meta.get("complete") is not True:
            raise BehavioError(f"{path / META}: checkpoint not complete (no \"complete\": true; still being written?)")
        config = read_json(path / ADAPTER_CONFIG)
        if not config.get("peft_type"):
            raise BehavioError(f"{path / ADAPTER_CONFIG}: no \"peft_type\"; not a PEFT adapter config")
        check_safetensors(path / ADAPTER_WEIGHTS)
    except BehavioError as exc:
        ckpt.problem = str(exc)
    return ckpt


def scan_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """Every ``checkpoint-<step>/`` of ``run_dir`` in step order, broken ones included (none: [])."""
    if not run_dir.is_dir():
        return []
    found = [inspect_checkpoint(p) for p in run_dir.iterdir() if p.is_dir() and is_checkpoint_name(p.name)]
    return sorted(found, key=lambda c: (c.step, c.name))


def find_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """Like :func:`scan_checkpoints`, but BehavioError when there is no run or no checkpoint to check."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BehavioError(f"{run_dir}: run directory not found")
    found = scan_checkpoints(run_dir)
    if not found:
        raise BehavioError(f"{run_dir}: no checkpoint-<step>/ directories in this run")
    return found


def complete_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """Every checkpoint training can resume from, in step order (broken and incomplete ones skipped)."""
    return [c for c in scan_checkpoints(run_dir) if c.resumable]


def newest_complete(run_dir: Path) -> Checkpoint | None:
    """The checkpoint ``--resume`` continues from (None: start from scratch)."""
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def incomplete_checkpoints(run_dir: Path) -> list[Path]:
    """``checkpoint-*`` directories that are not complete (a crash during save)."""
    good = {c.path for c in scan_checkpoints(run_dir) if c.resumable or (not c.broken and is_scaled_copy(c.name))}
    return sorted(p for p in run_dir.glob("checkpoint-*") if p.is_dir() and p not in good)


def content_hash(path: Path) -> str:
    """SHA-256 of an adapter's weights and config: equal hashes generate equal answers."""
    digest = hashlib.sha256()
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        digest.update(name.encode())
        with open(path / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# The run's settings (config.json)
# ---------------------------------------------------------------------------------------------


def run_fold_system(run_dir: Path) -> bool | str:
    """How the run folded system messages (``config.json`` key ``fold_system``): checks must fold the same way."""
    config = run_dir / "config.json"
    value = read_json(config).get("fold_system", "auto") if config.is_file() else "auto"
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value if isinstance(value, bool) else "auto"


def run_base_model(run_dir: Path, checkpoints: list[Checkpoint]) -> str | None:
    """The base model of a run: ``config.json`` key ``base_model``, else a checkpoint's behavio.json."""
    config = run_dir / "config.json"
    if config.is_file():
        value = read_json(config).get("base_model")
        if isinstance(value, str) and value:
            return value
    for ckpt in checkpoints:
        if isinstance(ckpt.meta.get("base_model"), str):
            return ckpt.meta["base_model"]
    return None


# ---------------------------------------------------------------------------------------------
# Metrics log
# ---------------------------------------------------------------------------------------------


class MetricsLog:
    """``metrics.jsonl``: one JSON object per log event, keyed by global step; TensorBoard too when installed."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = run_dir / "metrics.jsonl"
        self.tb_dir = run_dir / "tensorboard"
        self._writer = None
        self._tensorboard = tensorboard

    def truncate_after(self, step: int) -> None:
        """Drop events logged after ``step`` (a resumed run logs them again)."""
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if (event := _event(line)) is not None and event.get("step", 0) <= step]
        tmp = self.path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def write(self, event: dict) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(event, sort_keys=True) + "\n")
        except OSError as exc:
            if disk_full(exc, self.path.parent):
                raise DiskFull(f"writing {self.path}") from None
            raise
        writer = self._tb()
        if writer is not None:
            for key, value in event.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step",):
                    writer.add_scalar(f"{event.get('stage', 'train')}/{key}", value, event["step"])
            writer.flush()

    def _tb(self):
        if not self._tensorboard:
            return None
        if self._writer is None:
            try:
                import tensorboard  # noqa: F401  (optional; torch's writer needs it)
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._tensorboard = False
                return None
            self._writer = SummaryWriter(str(self.tb_dir))
        return self._writer

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        events = (_event(line) for line in self.path.read_text(encoding="utf-8").splitlines())
        return [event for event in events if event is not None]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _event(line: str) -> dict | None:
    """One metrics.jsonl line; None for a blank one or one torn by a full disk or a crash."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def check_disk_space(path: Path, need_bytes: int) -> None:
    """BehavioError when the filesystem of ``path`` has less than ``need_bytes`` free."""
    free = shutil.disk_usage(path).free
    if free < need_bytes:
        raise BehavioError(f"{path}: not enough disk space ({free / 1e6:.0f} MB free, this run needs about "
                           f"{need_bytes / 1e6:.0f} MB for checkpoints); free some space or use --runs-dir elsewhere")


# ---------------------------------------------------------------------------------------------
# A full disk
# ---------------------------------------------------------------------------------------------

LOW_SPACE = 16 * 2**20  # bytes free below which a failed torch.save is taken as a full disk


class DiskFull(BehavioError):
    """No space left while ``what`` (e.g. "saving checkpoint-6 (dpo step 2)"); the pipeline adds how to resume."""

    def __init__(self, what: str):
        super().__init__(f"no space left on device while {what}")
        self.what = what


def disk_full(exc: BaseException, path: Path) -> bool:
    """Whether ``exc`` (or one it was raised from) means the filesystem of ``path`` is full.

    Python's writes raise OSError(ENOSPC); safetensors raises SafetensorError "... (os error 28)";
    torch.save raises a RuntimeError that does not say why ("unexpected pos ..." or "PytorchStreamWriter
    failed writing file"), so for it the free space decides.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, BehavioError):
            return False
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text:
            return True
        if isinstance(exc, RuntimeError) and ("inline_container" in text or "PytorchStreamWriter" in text):
            try:
                return shutil.disk_usage(path).free < LOW_SPACE
            except OSError:
                return False
        exc = exc.__cause__ or exc.__context__
    return False
