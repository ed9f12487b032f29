"""User-facing errors: printed as one line each (no traceback), exit code 2."""

from __future__ import annotations

import difflib
from dataclasses import dataclass


def did_you_mean(word: str, options) -> str:
    """`` (did you mean 'lr'?)`` for the option closest to ``word``; "" when none is close."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class BehavioError(Exception):
    """A user error: bad input, missing model, broken checkpoint. Printed without a traceback."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec, located at file:line:col with the key path."""

    file: str
    line: int
    col: int
    path: str
    message: str
    name: str = ""  # a warning's stable name (behavio.spec.warning_names); "" for errors

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class SpecError(BehavioError):
    """A spec with one or more problems; carries all of them."""

    def __init__(self, issues: list[SpecIssue]):
        self.issues = sorted(issues, key=lambda i: (i.file, i.line, i.col, i.path, i.message))
        super().__init__("\n".join(str(i) for i in self.issues))
