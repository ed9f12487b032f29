"""Run a subset of a spec's check cases: ``behavio check --tag/--behavior/--set``.

Each filter keeps rules; a case is kept when any of its rules is. ``--set S`` keeps the cases of prompt set
S (every rule). ``--behavior B`` keeps B's rules (its parts too: ``no-poodles`` keeps ``no-poodles/contrast``)
and drops the other behaviors' rules from those cases, so the scorecard shows B's lines alone. ``--tag T``
keeps the rules whose verdict carries T: every rule of a case tagged T (by the spec or its prompt set), the
rules of behaviors tagged T elsewhere. Several values of one filter are alternatives; different filters
must all hold. Thresholds of lines no kept rule counts in are dropped.
"""

from __future__ import annotations

import dataclasses

from behavio.check.cases import CheckCase, CheckSpec, Rule
from behavio.errors import BehavioError, did_you_mean


def select_cases(spec: CheckSpec, *, tags: list[str] = (), behaviors: list[str] = (), sets: list[str] = ()) -> CheckSpec:
    """``spec`` with only the cases and rules the filters keep; BehavioError naming an unknown tag, behavior or set."""
    if not (tags or behaviors or sets):
        return spec
    _known("tag", tags, {t for c in spec.cases for r in c.rules for t in c.rule_tags(r)})
    _known("behavior", behaviors, {r.behavior for c in spec.cases for r in c.rules})
    _known("prompt set", sets, {c.prompt_set for c in spec.cases})

    def keep(case: CheckCase, rule: Rule) -> bool:
        return ((not tags or any(t in case.rule_tags(rule) for t in tags))
                and (not behaviors or rule.behavior in behaviors) and (not sets or case.prompt_set in sets))

    cases = []
    for case in spec.cases:
        rules = [r for r in case.rules if keep(case, r)]
        if rules:
            cases.append(dataclasses.replace(case, rules=rules))
    if not cases:
        raise BehavioError("no check case matches " + _describe(tags, behaviors, sets))
    lines = {r.line for c in cases for r in c.rules}
    thresholds = {line: t for line, t in spec.thresholds.items() if line in lines}
    return dataclasses.replace(spec, cases=cases, thresholds=thresholds)


def _known(what: str, asked, known: set[str]) -> None:
    for name in asked:
        if name not in known:
            raise BehavioError(f"no check case has the {what} {name!r}{did_you_mean(name, sorted(known))}; "
                               f"known: {', '.join(sorted(known)) or '(none)'}")


def _describe(tags, behaviors, sets) -> str:
    parts = [f"--{flag} {' / '.join(values)}" for flag, values in (("tag", tags), ("behavior", behaviors), ("set", sets))
             if values]
    return " and ".join(parts)
