"""DPO pairs derived from the rules: the rejected answer breaks exactly one rule.

Each behavior's kind derives its violations (``Kind.violations``; the table of every kind's
violations is in docs/rules.md). A pair is written when the rejected answer exists and differs from
the chosen one.
"""

from __future__ import annotations

from behavio import kinds
from behavio.compiler.compose import Example
from behavio.kinds import DpoContext
from behavio.spec.model import Behavior, Spec


class Donors:
    """Answer bodies that off-topic rejections borrow: for each set, the bodies of every other set."""

    def __init__(self, examples: list[Example]):
        self._all = [(ex.row.set, ex.body) for ex in examples if ex.body is not None]
        self._by_set: dict[str, list[str]] = {}

    def for_set(self, name: str) -> list[str]:
        if name not in self._by_set:
            self._by_set[name] = [body for s, body in self._all if s != name]
        return self._by_set[name]


def pairs_for(spec: Spec, ex: Example, others: Donors) -> list[dict]:
    """Every DPO pair of one example; ``others`` feeds off-topic rejections."""
    out = []
    ctx = DpoContext(spec=spec, index=ex.row.index, donors=others.for_set)
    for b in spec.behaviors:
        if b.get("dpo", True) is False:
            continue
        for violation, rejected in kinds.of(b).violations(b, ex, ctx):
            if rejected is not None and rejected.strip() != ex.answer.strip():
                out.append(_pair(ex, b, violation, rejected))
    return out


def _pair(ex: Example, b: Behavior, violation: str, rejected: str) -> dict:
    return {
        "id": f"{ex.id}/{b.id}/{violation}",
        "prompt": ex.prompt,
        "chosen": [{"role": "assistant", "content": ex.answer}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "behavior": b.id,
        "violation": violation,
        "prompt_set": ex.row.set,
    }
