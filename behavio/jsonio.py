"""JSON and JSONL files: strict reads that name the file and line, atomic writes, one deterministic encoder.

Every JSON file behavio reads or writes goes through here, so errors read the same everywhere
(``path: missing``, ``path:12: not valid JSON (...)``) and a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from behavio.errors import BehavioError

_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True)  # one encoder: json.dumps(**kw) builds one per call


def read_json(path: Path | str) -> dict:
    """A JSON object from ``path``, or BehavioError naming the file and what is wrong."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BehavioError(f"{path}: missing") from None
    except IsADirectoryError:
        raise BehavioError(f"{path}: is a directory, expected a JSON file") from None
    if not raw:
        raise BehavioError(f"{path}: empty file (0 bytes)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BehavioError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BehavioError(f"{path}: expected a JSON object")
    return data


def write_json(path: Path | str, data: dict) -> None:
    """Write ``data`` as indented, key-sorted JSON atomically (temp file + rename)."""
    write_text_atomic(Path(path), json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder, renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves half a file
        raise


def encode_line(row: dict) -> str:
    """One JSONL line (no newline): compact, key-sorted, UTF-8 kept: byte-identical for equal rows."""
    return _ENCODER.encode(row)


def encode_jsonl(rows: list[dict]) -> bytes:
    """Rows as JSONL bytes, deterministic (what compile writes)."""
    encode = _ENCODER.encode
    return "".join(encode(r) + "\n" for r in rows).encode("utf-8")


def parse_jsonl(data: bytes | str, source: str = "<jsonl>") -> list[dict]:
    """Rows of JSONL text; a bad line is a BehavioError naming ``source:line``."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BehavioError(f"{source}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise BehavioError(f"{source}:{lineno}: each line must be a JSON object")
        rows.append(row)
    return rows


def read_jsonl(path: Path | str, *, hint: str = "") -> list[dict]:
    """Rows of a JSONL file; BehavioError for a missing file (with ``hint``) or a bad line (``file:line``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BehavioError(f"{path}: missing" + (f"; {hint}" if hint else "")) from None
    except UnicodeDecodeError as exc:
        raise BehavioError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_jsonl(text, str(path))


def write_jsonl(path: Path | str, rows: list[dict]) -> None:
    """Write ``rows`` as JSONL atomically."""
    path = Path(path)
    write_text_atomic(path, "".join(encode_line(r) + "\n" for r in rows))
