"""Check cases: held-out prompts with the rules their answers must satisfy (each kind says which)."""

from __future__ import annotations

from behavio import kinds
from behavio.check.cases import CheckCase, Rule
from behavio.compiler.compose import Example
from behavio.spec.model import Spec


def rules_for(spec: Spec, ex: Example) -> list[Rule]:
    """The rules an answer to ``ex``'s prompt must pass, behavior by behavior in spec order."""
    return [rule for b in spec.behaviors for rule in kinds.of(b).rules(b, ex, spec)]


def check_case(spec: Spec, ex: Example, split: str) -> CheckCase:
    """One checks.jsonl row; ``split`` is check, recall, subject, reframed, paraphrase or probe (and prefixes the id)."""
    tags = tuple(dict.fromkeys(spec.tags + spec.prompts[ex.row.set].tags))
    return CheckCase(id=f"{split}/{ex.id}", split=split, prompt_set=ex.row.set, messages=ex.check_prompt or ex.prompt,
                     rules=rules_for(spec, ex), reference=ex.answer or None, tags=tags)
