"""Scorecard arithmetic: Wilson intervals, per-behavior/rule rates, over-refusal, best-checkpoint ordering."""

from __future__ import annotations

import pytest

from behavio.check.scorecard import CaseResult, Rate, RuleVerdict, Scorecard, pick_best, wilson


def case(cid: str, split: str, *verdicts: tuple[str, str, bool], response: str | None = "r") -> CaseResult:
    return CaseResult(cid, split, "set", "prompt", response, True,
                      [RuleVerdict(b, r, ok, float(ok), "why") for b, r, ok in verdicts])


def card(label: str, step: int, rates: dict[str, tuple[int, int]], thresholds: dict[str, float] | None = None) -> Scorecard:
    """A scorecard whose behavior ``b`` passes ``p`` of ``n`` cases."""
    cases = []
    for b, (p, n) in rates.items():
        cases += [case(f"{b}/{i}", "check", (b, "contains", i < p)) for i in range(n)]
    return Scorecard(label, thresholds or {b: 0.8 for b in rates}, cases, step=step)


def test_wilson_matches_known_values():
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(10, 10)[1] == 1.0 and wilson(0, 10)[0] == 0.0


def test_rate_str_and_dict():
    rate = Rate(3, 4)
    assert rate.rate == 0.75 and rate.to_dict()["passed"] == 3 and "3/4" in str(rate)
    assert Rate(0, 0).rate is None and str(Rate(0, 0)) == "-"


def test_rates_per_split_behavior_and_rule():
    c = Scorecard("m", {"no-x": 0.9, "pre": 0.5}, [
        case("a", "check", ("no-x", "refusal:refuse", True), ("pre", "prefix:absent", True)),
        case("b", "check", ("no-x", "refusal:answer", False), ("pre", "prefix:present", True)),
        case("c", "probe", ("no-x", "refusal:answer", True), ("pre", "prefix:present", False)),
    ])
    assert (c.behavior("no-x", "check").passed, c.behavior("no-x", "check").total) == (1, 2)
    assert (c.behavior("no-x", "probe").passed, c.behavior("no-x", "probe").total) == (1, 1)
    assert (c.behavior("no-x").passed, c.behavior("no-x").total) == (2, 3)
    assert c.rule("no-x", "refusal:answer").total == 2
    assert (c.over_refusal().passed, c.over_refusal().total) == (1, 2)  # one contrast case refused
    assert not c.meets("no-x") and c.meets("pre") and not c.meets_thresholds
    assert c.worst == pytest.approx(2 / 3) and c.overall == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert [f.id for f in c.failures] == ["b", "c"]
    data = c.to_dict()
    assert data["behaviors"]["no-x"]["probe"]["total"] == 1 and len(data["failures"]) == 2


def test_missing_responses_fail_but_are_not_over_refusals():
    c = Scorecard("m", {"no-x": 0.9}, [case("a", "check", ("no-x", "refusal:answer", False), response=None)])
    assert c.missing == ["a"] and c.answered_failures == [] and c.over_refusal().total == 0


def test_best_is_highest_worst_behavior_among_those_meeting_thresholds():
    weak_but_balanced = card("c-10", 10, {"a": (9, 10), "b": (9, 10)})
    strong_but_failing = card("c-20", 20, {"a": (10, 10), "b": (7, 10)})
    best_balanced = card("c-30", 30, {"a": (10, 10), "b": (9, 10)})
    assert pick_best([weak_but_balanced, strong_but_failing, best_balanced]).label == "c-30"
    assert pick_best([strong_but_failing, weak_but_balanced]).label == "c-10"


def test_best_ties_broken_by_overall_then_earlier_step():
    low_overall = card("c-10", 10, {"a": (9, 10), "b": (9, 10)})
    high_overall = card("c-20", 20, {"a": (10, 10), "b": (9, 10)})
    assert pick_best([low_overall, high_overall]).label == "c-20"
    twin = card("c-40", 40, {"a": (10, 10), "b": (9, 10)})
    assert pick_best([twin, high_overall]).label == "c-20"


def test_best_when_nothing_meets_thresholds_uses_the_same_ordering():
    a = card("c-10", 10, {"a": (5, 10), "b": (6, 10)})
    b = card("c-20", 20, {"a": (7, 10), "b": (6, 10)})
    best = pick_best([a, b])
    assert best.label == "c-20" and not best.meets_thresholds
    assert pick_best([]) is None
