"""Find the checkpoints of a run and tell the sound ones from the broken ones (before loading anything).

Layout: ``runs/RUN/checkpoint-<step>/`` holding ``adapter_model.safetensors``, ``adapter_config.json``
and ``behavio.json`` (``{"spec_hash", "step", "stage", "metrics", "complete": true, "base_model"}``).
A checkpoint is broken, with the file named, when a file is missing, empty, not valid JSON, a
truncated safetensors, or ``behavio.json`` lacks ``"complete": true``. Weights load from safetensors only.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from behavio.errors import BehavioError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
META = "behavio.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class Checkpoint:
    """One checkpoint directory; ``problem`` is None when it can be loaded."""

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


def read_json(path: Path) -> dict:
    """A JSON object from ``path``, or BehavioError naming the file and what is wrong."""
    if not path.is_file():
        raise BehavioError(f"{path}: missing")
    if path.stat().st_size == 0:
        raise BehavioError(f"{path}: empty file (0 bytes)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BehavioError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BehavioError(f"{path}: expected a JSON object")
    return data


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


def find_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """Every ``checkpoint-<step>/`` of ``run_dir`` in step order, broken ones included."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BehavioError(f"{run_dir}: run directory not found")
    found = [inspect_checkpoint(p) for p in run_dir.iterdir() if p.is_dir() and _NAME.match(p.name)]
    if not found:
        raise BehavioError(f"{run_dir}: no checkpoint-<step>/ directories in this run")
    return sorted(found, key=lambda c: (c.step, c.name))


def content_hash(path: Path) -> str:
    """SHA-256 of an adapter's weights and config: equal hashes generate equal answers."""
    digest = hashlib.sha256()
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        digest.update(name.encode())
        with open(path / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


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
