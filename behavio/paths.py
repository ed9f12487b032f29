"""Where behavio's own files live: everything it reads at run time is inside the package."""

from __future__ import annotations

import difflib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def templates_dir() -> Path:
    """``behavio/templates/``: the pytest suite and scorecard templates, chat templates, frame libraries."""
    return PACKAGE_DIR / "templates"


def schema_path() -> Path:
    """``behavio/spec/schema.json``, the spec's JSON Schema."""
    return PACKAGE_DIR / "spec" / "schema.json"


def missing_file_message(path: Path, shown: str) -> str:
    """``shown: no such file (looked for /abs/path); similar names there: ...`` for a file that is not there."""
    return f"{shown}: no such file (looked for {path.resolve()}){_near_names(path)}"


def _near_names(path: Path) -> str:
    folder = path.parent
    if not folder.is_dir():
        return f"; the folder {folder} does not exist either"
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.5)
    if close:
        return f"; similar names there: {', '.join(close)}"
    if not names:
        return "; the folder is empty"
    return f"; files there: {', '.join(names[:8])}" + (" ..." if len(names) > 8 else "")
