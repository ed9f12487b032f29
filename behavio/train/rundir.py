"""The run directory: creation, the lock, checkpoint publication and completeness, the metrics log.

Layout (docs/formats.md)::

    runs/<spec>-<YYYYmmdd-HHMMSS>/
      config.json  manifest.json  data/  metrics.jsonl  checkpoint-<global step>/  .lock  .staging/

A trainer writes each checkpoint into ``.staging/<stage>/checkpoint-<stage step>/``; once every file
is there it is renamed to ``checkpoint-<global step>/`` and ``behavio.json`` (``"complete": true``)
is written last, atomically. A directory without it is incomplete and never loaded.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from behavio.errors import BehavioError

META = "behavio.json"
LOCK = ".lock"
STAGING = ".staging"
RESUME_FILES = ("trainer_state.json", "adapter_model.safetensors", "adapter_config.json")


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves half a file
        raise


def read_json(path: Path) -> dict:
    """A JSON object from ``path`` or BehavioError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BehavioError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BehavioError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BehavioError(f"{path}: expected a JSON object")
    return data


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


@dataclass(frozen=True)
class SavedCheckpoint:
    """A complete checkpoint: its directory and its ``behavio.json``."""

    path: Path
    meta: dict

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def stage(self) -> str:
        return str(self.meta["stage"])


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


def complete_checkpoints(run_dir: Path) -> list[SavedCheckpoint]:
    """Every complete checkpoint of ``run_dir`` in step order; incomplete ones are skipped."""
    found = []
    for path in run_dir.glob("checkpoint-*"):
        try:
            meta = json.loads((path / META).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(meta, dict) and meta.get("complete") is True and all((path / f).is_file() for f in RESUME_FILES):
            found.append(SavedCheckpoint(path, meta))
    return sorted(found, key=lambda c: c.step)


def newest_complete(run_dir: Path) -> SavedCheckpoint | None:
    """The checkpoint ``--resume`` continues from (None: start from scratch)."""
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def incomplete_checkpoints(run_dir: Path) -> list[Path]:
    """``checkpoint-*`` directories that are not complete (a crash during save)."""
    good = {c.path for c in complete_checkpoints(run_dir)}
    return sorted(p for p in run_dir.glob("checkpoint-*") if p.is_dir() and p not in good)


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
