"""Where behavio's own files live (templates/ at the repository root, next to the package)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def templates_dir() -> Path:
    """The templates/ folder: repository root in a source checkout, or packaged copy."""
    for candidate in (PACKAGE_DIR.parent / "templates", PACKAGE_DIR / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("behavio templates/ folder not found next to the package")
