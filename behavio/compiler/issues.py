"""Collects every problem found while compiling one spec, each located in the spec file."""

from __future__ import annotations

from behavio.errors import SpecError, SpecIssue
from behavio.spec.model import Spec


class Issues:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.items: list[SpecIssue] = []
        self.warnings: list[SpecIssue] = []

    def add(self, path: tuple, message: str) -> None:
        self.items.append(self.spec.located.issue(path, message))

    def warn(self, path: tuple, message: str) -> None:
        self.warnings.append(self.spec.located.issue(path, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise SpecError(self.items)
