"""Rule scorers: one module per rule kind, each a pure function registered by name.

A scorer is ``fn(response, args, case, finished) -> RuleResult``; see docs/formats.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["RuleResult", "register", "score_rule", "RULES"]


@dataclass(frozen=True)
class RuleResult:
    """Verdict of one rule on one response."""

    passed: bool
    score: float
    explanation: str


Scorer = Callable[[str, dict, dict, bool], RuleResult]
RULES: dict[str, Scorer] = {}


def register(kind: str) -> Callable[[Scorer], Scorer]:
    """Register ``fn`` as the scorer for rule ``kind``."""

    def wrap(fn: Scorer) -> Scorer:
        RULES[kind] = fn
        return fn

    return wrap


def score_rule(kind: str, response: str, args: dict, case: dict | None = None, finished: bool = True) -> RuleResult:
    """Score ``response`` with the rule ``kind``; raises KeyError naming known kinds if unknown."""
    _load_builtin_rules()
    if kind not in RULES:
        raise KeyError(f"unknown rule kind {kind!r}; known: {', '.join(sorted(RULES))}")
    return RULES[kind](response, args, case or {}, finished)


def _load_builtin_rules() -> None:
    from behavio.rules import builtin  # noqa: F401  (imports every rule module, which register)
