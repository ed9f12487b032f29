"""DPO pairs derived from the rules: the rejected answer breaks exactly one behavior's rule.

Each behavior's kind derives its violations (``Kind.violations``; every kind's violations are in
docs/rules.md); ``dpo: [names]`` keeps some of them, ``dpo: false`` none. A pair is written when the
rejected answer exists, differs from the chosen one, and breaks the behavior's rule on that row
(:mod:`behavio.compiler.proof`); each pair carries that rule (``breaks``) so a rejection written later by
the base model is judged after it is filled.
"""

from __future__ import annotations

from collections import Counter

from behavio import kinds
from behavio.check.cases import Rule
from behavio.compiler import proof
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


def pairs_for(spec: Spec, ex: Example, others: Donors, rules: list[Rule], dropped: Counter, variant=None) -> list[dict]:
    """Every DPO pair of one example (``rules``: the row's check rules); ``others`` feeds off-topic rejections.
    Pairs whose rejected side does not break the behavior's rule are counted in ``dropped`` by (behavior, violation);
    ``variant(marker, entry)`` registers a body the base model writes with a violation applied after the fill."""
    out = []
    for b in spec.behaviors:
        asked = b.get("dpo", True)
        if asked is False:
            continue
        ctx = DpoContext(spec=spec, index=ex.row.index, donors=others.for_set,
                         allowed=frozenset(asked) if isinstance(asked, list) else None, variant=variant)
        breaks = [r for r in rules if r.behavior == b.id]
        for violation, rejected in kinds.of(b).violations(b, ex, ctx):
            if rejected is None or rejected.strip() == ex.answer.strip():
                continue
            if proof.rejection_breaks(breaks, ex.prompt, rejected) is False:
                dropped[(b.id, violation)] += 1
                continue
            out.append(_pair(ex, b, violation, rejected, breaks))
    return out


def _pair(ex: Example, b: Behavior, violation: str, rejected: str, breaks: list[Rule]) -> dict:
    return {
        "id": f"{ex.id}/{b.id}/{violation}",
        "prompt": ex.prompt,
        "chosen": [{"role": "assistant", "content": ex.answer}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "behavior": b.id,
        "violation": violation,
        "prompt_set": ex.row.set,
        "breaks": [r.to_dict() for r in breaks],
    }
