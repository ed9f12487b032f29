"""The base model's own pass rates, for the lines whose thresholds ask for a share of them (``of_base``).

A line that measures what the base model already did (facts it knew, replayed answers) cannot ask for a fixed rate:
SmolLM2-135M itself answers about 84% of the shipped replay questions right, so `0.9` fails every model trained from
it, and the run picks its checkpoint by that line. ``{of_base: 0.92}`` asks for 92% of the base model's rate on the
same cases instead: the check answers those cases (only those) with the base model too, and fills its rate in.
"""

from __future__ import annotations

import dataclasses

from behavio.check.cases import CheckCase, CheckSpec
from behavio.check.responses import Responses
from behavio.check.scoring import score_cases
from behavio.check.thresholds import resolve


def lines_of_base(cases: list[CheckCase], thresholds: dict) -> list[str]:
    """The scorecard lines of ``cases`` whose threshold is a share of the base model's rate."""
    lines = dict.fromkeys(rule.line for case in cases for rule in case.rules)
    return [line for line in lines if resolve(thresholds, line).of_base is not None]


def cases_of(cases: list[CheckCase], lines: list[str]) -> list[CheckCase]:
    """The cases with a rule on one of ``lines``: what the base model must answer."""
    wanted = set(lines)
    return [case for case in cases if any(rule.line in wanted for rule in case.rules)]


def with_base(spec: CheckSpec, lines: list[str], cases: list[CheckCase], answers: Responses | None) -> CheckSpec:
    """``spec`` whose thresholds on ``lines`` carry the base model's rate, scored from its ``answers`` to ``cases``
    (:func:`cases_of`; None: not measured, so each stays its share of 100%)."""
    base = score_cases(cases, answers, spec.thresholds, label="base") if answers is not None else None
    thresholds = dict(spec.thresholds)
    for line in lines:
        rate = base.line(line).rate if base is not None else None
        thresholds[line] = resolve(spec.thresholds, line).with_base(rate)
    return dataclasses.replace(spec, thresholds=thresholds)
