"""Where behavio's own files live: everything it reads at run time is inside the package."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def templates_dir() -> Path:
    """``behavio/templates/``: the pytest suite and scorecard templates, chat templates, frame libraries."""
    return PACKAGE_DIR / "templates"


def schema_path() -> Path:
    """``behavio/spec/schema.json``, the spec's JSON Schema."""
    return PACKAGE_DIR / "spec" / "schema.json"
