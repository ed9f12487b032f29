"""Model fingerprints: a short hash of what a model directory generates with, for cache keys."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from behavio.errors import BehavioError

_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path")


def model_fingerprint(path: Path | str) -> str:
    """A short stable hash of a model directory: config, weight file names/sizes, chat template.

    Cheap (never reads the weights); used as a cache key for generated answers.
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise BehavioError(f"{path} is not a model directory (no config.json)")
    config = json.loads(config_file.read_text())
    for key in _VOLATILE_CONFIG_KEYS:
        config.pop(key, None)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for file in sorted(path.glob("*.safetensors*")):  # weights and their index
        digest.update(f"\0{file.name}:{file.stat().st_size}".encode())
    tokenizer_config = path / "tokenizer_config.json"
    if tokenizer_config.is_file():
        settings = json.loads(tokenizer_config.read_text())
        picked = {k: settings.get(k) for k in ("chat_template", "bos_token", "eos_token", "pad_token")}
        digest.update(b"\0tokenizer:" + json.dumps(picked, sort_keys=True, default=str).encode())
    if (path / "chat_template.jinja").is_file():
        digest.update(b"\0chat_template:" + (path / "chat_template.jinja").read_bytes())
    return digest.hexdigest()[:16]
