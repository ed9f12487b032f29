"""Collects every problem found while compiling one spec, each located in the spec file.

Warnings carry a stable name (:mod:`behavio.spec.warning_names`); the ones the spec lists under
``ignore_warnings`` are dropped here.
"""

from __future__ import annotations

import dataclasses

from behavio.errors import SpecError, SpecIssue
from behavio.spec.warning_names import check_name
from behavio.spec.model import Spec


class Issues:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.items: list[SpecIssue] = []
        self.warnings: list[SpecIssue] = []
        self.accepted: set[str] = set()  # names of warnings the spec's ignore_warnings accepted
        self._said: set[str] = set()  # every issue and warning so far, as printed

    def add(self, path: tuple, message: str) -> None:
        self._append_new(self.items, self.spec.located.issue(path, message))

    def warn(self, name: str, path: tuple, message: str) -> None:
        """A warning called ``name`` (unless the spec ignores it) at ``path``."""
        if check_name(name) in self.spec.ignore_warnings:
            self.accepted.add(name)
            return
        self._append_new(self.warnings, dataclasses.replace(self.spec.located.issue(path, message), name=name))

    def raise_if_any(self) -> None:
        if self.items:
            raise SpecError(self.items)

    def _append_new(self, found: list[SpecIssue], issue: SpecIssue) -> None:
        """Each problem once (a prompt set's rows all hit the same one)."""
        said = f"{'error' if found is self.items else 'warning'}\0{issue}"
        if said not in self._said:
            self._said.add(said)
            found.append(issue)
