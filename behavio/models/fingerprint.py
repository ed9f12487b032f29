"""Model fingerprints: a hash of what a model directory generates with, for cache keys.

Every file that changes what the model says is hashed by content: the weights, the config and
generation config, the tokenizer and the chat template. Weights are large, so each file's hash is
remembered under ``$BEHAVIO_CACHE/fingerprints/`` by (path, device, inode, size, mtime, ctime): an
overwritten file always has a new ctime, so it is hashed again, even at the same size and mtime.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from behavio.errors import BehavioError
from behavio.models.resolve import cache_root

# Files that change what a model generates. config.json and generation_config.json are compared
# without the keys transformers rewrites on every save.
FINGERPRINTED = ("config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                 "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt")
NORMALIZED = ("config.json", "generation_config.json")
_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path")
MEMO_MIN_BYTES = 1 << 20  # smaller files are hashed every time (cheaper than the memo)

_memo: dict[str, str] = {}


def model_fingerprint(path: Path | str) -> str:
    """A short stable hash of a model directory's contents (see the module docstring); location does not matter."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise BehavioError(f"{path} is not a model directory (no config.json)")
    files = sorted({f for pattern in FINGERPRINTED for f in path.glob(pattern) if f.is_file()})
    digest = hashlib.sha256()
    for file in files:
        content = _normalized(file) if file.name in NORMALIZED else file_digest(file)
        digest.update(f"\0{file.name}:{content}".encode())
    return digest.hexdigest()[:16]


def _normalized(file: Path) -> str:
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BehavioError(f"{file}: not valid JSON") from None
    for key in _VOLATILE_CONFIG_KEYS:
        config.pop(key, None)
    return json.dumps(config, sort_keys=True)


def file_digest(file: Path) -> str:
    """SHA-256 of ``file``'s bytes; remembered (in memory and in the cache) while the file is unchanged."""
    stat = file.stat()
    if stat.st_size < MEMO_MIN_BYTES:
        return _hash_file(file)
    identity = f"{file.resolve()}|{stat.st_dev}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:32]
    if key in _memo:
        return _memo[key]
    memo = cache_root() / "fingerprints" / key
    try:
        known = memo.read_text().strip()
    except OSError:
        known = ""
    if len(known) != 64:
        known = _hash_file(file)
        _remember(memo, known)
    _memo[key] = known
    return known


def _hash_file(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _remember(memo: Path, digest: str) -> None:
    """Write the memo atomically; a read-only cache only costs hashing again next time."""
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(digest + "\n")
        os.replace(tmp, memo)
    except OSError:
        pass
