"""The user's data files (prompts and answers): JSONL or CSV, read strictly, every problem at ``file:line``.

CSV is read with the csv module's strict mode: a row with more or fewer fields than the header, an
unterminated quote or a stray quote is an error naming the line (a truncated answer or a swallowed row
never reaches training). A UTF-8 byte order mark (Excel's "CSV UTF-8") is accepted. A missing file
names the resolved path and the files with similar names next to it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from behavio.compiler.issues import Issues
from behavio.errors import BehavioError
from behavio.jsonio import parse_jsonl
from behavio.paths import missing_file_message


@dataclass(frozen=True)
class Record:
    """One row of a data file: its fields and the line it starts on."""

    line: int
    fields: dict


def read_records(path: Path, issues: Issues, where: tuple) -> list[Record]:
    """Rows of a JSONL or CSV file; problems are reported at ``where`` with ``file:line``."""
    text = _read_text(path, issues, where)
    if text is None:
        return []
    try:
        records = _csv_records(text, path.name) if path.suffix.lower() == ".csv" else _jsonl_records(text, path.name)
    except BehavioError as exc:
        issues.add(where, str(exc))
        return []
    if not records:
        issues.add(where, f"{path.name} has no rows")
    return records


def read_file_rows(path: Path) -> list[Record]:
    """Rows of a JSONL or CSV file, or BehavioError naming the problem (for callers without an Issues list)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BehavioError(f"cannot read {path.name}: {exc}") from None
    return _csv_records(text, path.name) if path.suffix.lower() == ".csv" else _jsonl_records(text, path.name)


def _read_text(path: Path, issues: Issues, where: tuple) -> str | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        issues.add(where, missing_file_message(path, path.name))
        return None
    except OSError as exc:
        issues.add(where, f"cannot read {path.name}: {exc.strerror or exc}")
        return None
    try:
        return raw.decode("utf-8-sig")  # a byte order mark is not part of the first column's name
    except UnicodeDecodeError as exc:
        issues.add(where, f"{path.name} is not UTF-8 text (byte {exc.start}); save it as UTF-8")
        return None


def _jsonl_records(text: str, name: str) -> list[Record]:
    numbered = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    rows = parse_jsonl(text, name)
    return [Record(line, row) for (line, _), row in zip(numbered, rows)]


def _csv_records(text: str, name: str) -> list[Record]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    try:
        header = next(reader, None)
        if header is None:
            return []
        columns = [h.strip() for h in header]
        records, start = [], reader.line_num + 1
        for row in reader:
            if not any(cell.strip() for cell in row):
                start = reader.line_num + 1
                continue
            if len(row) != len(columns):
                raise BehavioError(f"{name}:{start}: {len(row)} fields, but the header has {len(columns)} "
                                   f"({', '.join(columns)}); quote fields that contain commas")
            records.append(Record(start, dict(zip(columns, row))))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise BehavioError(f"{name}:{start}: not valid CSV ({exc}); check the quotes of the row that starts "
                           "on this line") from None
    return records
