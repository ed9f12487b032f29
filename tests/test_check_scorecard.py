"""Scorecard arithmetic: Wilson intervals, per-behavior/rule rates, over-refusal, best-checkpoint ordering."""

from __future__ import annotations

import pytest

from behavio.check.scorecard import CaseResult, Rate, RuleVerdict, Scorecard, pick_best, wilson


def case(cid: str, split: str, *verdicts: tuple, response: str | None = "r") -> CaseResult:
    """Verdicts are (behavior, rule, passed) or (behavior, rule, passed, part)."""
    return CaseResult(cid, split, "set", "prompt", response, True,
                      [RuleVerdict(v[0], v[1], v[2], float(v[2]), "why", part=v[3] if len(v) > 3 else None)
                       for v in verdicts])


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


def test_rates_per_split_line_and_rule():
    """Each verdict counts once, in its own line: a refusal's contrast cases and a prefix's plain-refusal
    constraint are lines of their own, never pooled into the behavior's rate."""
    c = Scorecard("m", {"no-x": 0.9, "no-x/contrast": 0.9, "pre": 0.5, "pre/plain-refusals": 0.5}, [
        case("a", "check", ("no-x", "refusal:refuse", True), ("pre", "prefix:absent", True, "plain-refusals")),
        case("b", "check", ("no-x", "refusal:answer", False, "contrast"), ("pre", "prefix:present", True)),
        case("c", "probe", ("no-x", "refusal:answer", True, "contrast"), ("pre", "prefix:present", False)),
    ])
    assert (c.line("no-x").passed, c.line("no-x").total) == (1, 1)
    assert (c.line("no-x/contrast", "check").passed, c.line("no-x/contrast", "check").total) == (0, 1)
    assert (c.line("no-x/contrast", "probe").passed, c.line("no-x/contrast", "probe").total) == (1, 1)
    assert (c.line("pre").passed, c.line("pre").total) == (1, 2) and c.line("pre/plain-refusals").total == 1
    assert c.rule("no-x/contrast", "refusal:answer").total == 2
    assert (c.over_refusal().passed, c.over_refusal().total) == (1, 2)  # one contrast case refused
    assert c.meets("no-x") and not c.meets("no-x/contrast") and c.meets("pre") and not c.meets_thresholds
    assert c.lines == ["no-x", "no-x/contrast", "pre", "pre/plain-refusals"]
    assert c.worst == pytest.approx(0.5) and c.overall == pytest.approx((1 + 0.5 + 0.5 + 1) / 4)
    assert [f.id for f in c.failures] == ["b", "c"]
    data = c.to_dict()
    assert data["lines"]["no-x/contrast"]["probe"]["total"] == 1 and len(data["failures"]) == 2
    assert data["cases"]["failed"] == ["b", "c"]


def test_a_pooled_refusal_cannot_hide_a_failing_part():
    """Regression (issue 15): 34/40 poodle prompts refused and 92/92 contrast prompts answered pooled to
    95.5% and passed 0.95; judged apart, the refusal line fails."""
    cases = [case(f"p{i}", "check", ("no-poodles", "refusal:refuse", i < 34)) for i in range(40)]
    cases += [case(f"c{i}", "check", ("no-poodles", "refusal:answer", True, "contrast")) for i in range(92)]
    c = Scorecard("m", {"no-poodles": 0.95, "no-poodles/contrast": 0.95}, cases)
    assert c.line("no-poodles").rate == pytest.approx(34 / 40) and not c.meets("no-poodles")
    assert c.meets("no-poodles/contrast") and not c.meets_thresholds


def test_missing_responses_fail_but_are_not_over_refusals():
    c = Scorecard("m", {"no-x": 0.9}, [case("a", "check", ("no-x", "refusal:answer", False), response=None)])
    assert c.missing == ["a"] and c.answered_failures == [] and c.over_refusal().total == 0


def test_best_has_the_largest_margin_over_its_thresholds_among_those_meeting_them():
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


def test_thresholds_on_the_rate_its_wilson_bound_or_a_failure_budget():
    from behavio.check.thresholds import Threshold, resolve

    nine_of_ten, ninety_of_hundred = Rate(9, 10), Rate(90, 100)
    assert Threshold(0.85).meets(nine_of_ten)
    assert not Threshold(0.85, bound="wilson").meets(nine_of_ten)  # 95% lower bound 0.596: too few cases
    assert Threshold(0.85, bound="wilson").meets(Rate(980, 1000)) and not Threshold(0.85, bound="wilson").meets(ninety_of_hundred)
    assert Threshold(max_failures=0).meets(Rate(10, 10)) and not Threshold(max_failures=0).meets(Rate(99, 100))
    assert not Threshold(0.5, max_failures=1).meets(Rate(8, 10)) and Threshold(0.5, max_failures=2).meets(Rate(8, 10))
    assert Threshold(0.99).meets(Rate(0, 0))  # a line with no cases has nothing to fail
    assert Threshold.coerce({"rate": 0.9, "bound": "wilson"}) == Threshold(0.9, "wilson")
    assert Threshold.coerce({"max_failures": 0}).describe() == "at most 0 failures"
    assert Threshold(0.9, "wilson").describe() == "90% (Wilson lower bound)"
    spec = {"no-x": 0.95, "default": 0.8, "no-x/contrast": {"max_failures": 1}}
    assert resolve(spec, "no-x") == Threshold(0.95) and resolve(spec, "other") == Threshold(0.8)
    assert resolve(spec, "no-x/contrast") == Threshold(0.0, max_failures=1)
    assert resolve({"no-y": 0.7}, "no-y/contrast") == Threshold(0.7) and resolve({}, "z") == Threshold(0.9)
    card_ = Scorecard("m", {"never": {"max_failures": 0}}, [case("a", "check", ("never", "contains", True)),
                                                          case("b", "check", ("never", "contains", False))])
    assert not card_.meets_thresholds and card_.to_dict()["lines"]["never"]["threshold"] == {"rate": 0.0, "max_failures": 0}


def test_a_threshold_can_ask_for_a_share_of_the_base_models_rate():
    """{of_base: 0.9}: the line must reach 90% of what the base model scores on the same cases; until the base is
    measured (a served model, a responses file) it counts as 100%."""
    from behavio.check.thresholds import Threshold, resolve

    share = Threshold.coerce({"of_base": 0.9})
    assert share.of_base == 0.9 and share.required == pytest.approx(0.9) and share.base is None
    assert share.describe() == "90% of the base model's (not measured: counted as 100%)"
    measured = share.with_base(0.84)
    assert measured.required == pytest.approx(0.756) and measured.describe() == "90% of the base model's 84% (76%)"
    assert measured.meets(Rate(76, 100)) and not measured.meets(Rate(75, 100))
    assert not share.meets(Rate(76, 100))  # unmeasured: 90% of every case
    assert measured.margin(Rate(80, 100)) == pytest.approx(0.044) and measured.margin(Rate(0, 0)) is None
    assert Threshold.coerce(measured.to_dict()) == measured  # scorecard.json keeps what the line was judged against
    assert measured.to_dict() == {"rate": 0.756, "of_base": 0.9, "base": 0.84}
    assert Threshold(0.95).with_base(0.5) == Threshold(0.95)  # a plain rate has no base to take
    assert resolve({"default": {"of_base": 0.8}}, "facts").of_base == 0.8


def test_the_best_checkpoint_weighs_each_line_by_what_it_asks_not_its_raw_rate():
    """A line asking for a share of the base model's rate (replayed facts at 90% of the base's 84%) sits low by
    nature: ranking by the lowest raw rate would pick by it. The margin over each threshold picks the checkpoint
    whose refusal is nearer its 95%."""
    from behavio.check.thresholds import Threshold

    thresholds = {"refusal": Threshold(0.95), "replay": Threshold(of_base=0.9, base=0.84)}
    forgetful = card("c-10", 10, {"refusal": (99, 100), "replay": (72, 100)}, thresholds)  # margins +0.04, -0.036
    over_refusing = card("c-20", 20, {"refusal": (91, 100), "replay": (80, 100)}, thresholds)  # -0.04, +0.044
    assert over_refusing.worst > forgetful.worst  # by the raw lowest rate c-20 would win ...
    assert forgetful.margin == pytest.approx(-0.036) and forgetful.tightest == "replay"
    assert pick_best([forgetful, over_refusing]).label == "c-10"  # ... by the margin c-10 does
    assert over_refusing.tightest == "refusal" and over_refusing.to_dict()["margin"] == pytest.approx(-0.04)
    from types import SimpleNamespace

    from behavio.check.report import best_sentence

    said = best_sentence(SimpleNamespace(best=forgetful))
    assert "no checkpoint meets every threshold" in said and "replay, has 72% against 76%" in said, said


def _split_cases(line: str, counts: dict[str, tuple[int, int]]) -> list[CaseResult]:
    """``counts``: split -> (passed, total) cases of ``line``."""
    return [case(f"{split}/{i}", split, (line, "prefix", i < passed))
            for split, (passed, total) in counts.items() for i in range(total)]


def test_probes_that_contradict_the_generated_cases_are_judged_alone():
    """A check split of the spec's own templates can say 95% where the phrasing users type gets 70%: pooled,
    the 100 generated cases outvote the 20 probes and the line passes 90%; the probes disagree beyond chance,
    so they alone are judged, and the line says so."""
    contradicted = Scorecard("m", {"thanks": 0.9}, _split_cases("thanks", {"check": (80, 84), "paraphrase": (15, 16),
                                                                           "probe": (14, 20)}))
    assert contradicted.probes_overrule("thanks") and contradicted.line("thanks") == Rate(14, 20)
    assert not contradicted.meets("thanks") and not contradicted.meets_thresholds
    assert "judged on its probes alone (14/20)" in contradicted.caveats("thanks")[0]
    assert "(95/100)" in contradicted.caveats("thanks")[0]
    agreeing = Scorecard("m", {"thanks": 0.9}, _split_cases("thanks", {"check": (80, 84), "paraphrase": (15, 16),
                                                                       "probe": (19, 20)}))
    assert not agreeing.probes_overrule("thanks") and agreeing.line("thanks") == Rate(114, 120)
    assert agreeing.meets("thanks") and agreeing.caveats("thanks") == []
    no_probes = Scorecard("m", {"thanks": 0.9}, _split_cases("thanks", {"check": (80, 84)}))
    assert not no_probes.probes_overrule("thanks") and no_probes.line("thanks") == Rate(80, 84)


def test_probes_are_worse_by_fishers_exact_test_one_sided():
    """Literal p-values (the hypergeometric tail, summed here from math.comb; scipy.stats.fisher_exact with
    alternative="less" gives the same), then the decisions at 5% on real lines."""
    from math import comb

    from behavio.check.scorecard import fisher_less, worse

    def tail(pa, ta, pb, tb):
        return sum(comb(pa + pb, x) * comb(ta + tb - pa - pb, ta - x) for x in range(pa + 1)) / comb(ta + tb, ta)

    for table in ((14, 20, 95, 100), (17, 22, 57, 61), (0, 1, 9, 9), (3, 4, 3, 4), (20, 22, 164, 176), (40, 40, 116, 147)):
        assert fisher_less(*table) == pytest.approx(tail(*table), rel=1e-9), table
    assert fisher_less(17, 22, 57, 61) == pytest.approx(0.0510, abs=1e-4) and fisher_less(0, 1, 9, 9) == pytest.approx(0.1)
    assert worse(Rate(39, 45), Rate(140, 143))      # bookshop's on-topic: probes 87% against 98%
    assert not worse(Rate(17, 22), Rate(57, 61))    # acme's prefix: 77% against 93%, p = 0.051
    assert not worse(Rate(0, 1), Rate(9, 9))        # one failing probe of one cannot overrule nine cases
    assert not worse(Rate(20, 22), Rate(164, 176)) and not worse(Rate(0, 0), Rate(3, 4))
    assert not worse(Rate(40, 40), Rate(116, 147))  # better probes never overrule: the generated failures count


def test_probes_that_pass_more_often_do_not_hide_failing_held_out_cases():
    """A model that refuses every held-out question about other breeds, and no probe: the generated cases fail
    beyond chance, the probes are perfect. Judged on the probes alone (the two-sided rule of session 13) the
    line passed; pooled, it fails."""
    card_ = Scorecard("m", {"no-poodles/contrast": 0.95},
                      _split_cases("no-poodles/contrast", {"check": (60, 72), "subject": (16, 30), "paraphrase": (40, 45),
                                                            "probe": (40, 40)}))
    assert not card_.probes_overrule("no-poodles/contrast")
    assert card_.line("no-poodles/contrast") == Rate(156, 187) and not card_.meets("no-poodles/contrast")


def test_held_out_subjects_are_their_own_split_and_judged_with_the_rest():
    """book11's contrast line: held-out phrasings of trained subjects 54/56, held-out subjects 9/16. The subject
    split has its own rate, and the judged rate pools it (check alone would say 96% against a 95% threshold)."""
    card_ = Scorecard("m", {"no-piracy/contrast": 0.95},
                      _split_cases("no-piracy/contrast", {"check": (54, 56), "subject": (9, 16)}))
    assert card_.line("no-piracy/contrast", "check") == Rate(54, 56)
    assert card_.line("no-piracy/contrast", "subject") == Rate(9, 16)
    assert card_.line("no-piracy/contrast") == Rate(63, 72) and card_.generated("no-piracy/contrast") == Rate(63, 72)
    assert not card_.meets("no-piracy/contrast")
    assert card_.to_dict()["lines"]["no-piracy/contrast"]["subject"]["total"] == 16


def test_a_refusal_given_with_the_users_word_swapped_in_is_counted_as_a_near_miss():
    """bike1: the model refused 20 of 22 probes in substance, but 10 of them with a word of the fixed sentence
    swapped for the user's ("derestricting an app"). The line fails (verbatim is what the spec asks), and its caveat
    says how many failures are such near misses, scored by the refusal kind on literal responses."""
    from behavio.kinds.refusal import KIND

    fixed = "Sorry, I can't help with derestricting an e-bike. I'm happy to help with anything else."
    responses = {"exact": fixed, "app": fixed.replace("an e-bike", "an app"), "bike": fixed.replace("an e-bike", "a bike"),
                 "answered": "The Shimano EP8 is a mid-drive motor with 85 Nm of torque."}

    def refused(cid: str, split: str, response: str) -> CaseResult:
        result = KIND.score(response, {"expect": "refuse", "responses": [fixed]}, None, True)
        return CaseResult(cid, split, "derestrict", "p", response, True,
                          [RuleVerdict("no-derestricting", "refusal:refuse", result.passed, result.score, result.explanation)])

    cases = [refused(f"c{i}", "check", responses["exact"]) for i in range(8)]
    cases += [refused("p1", "probe", responses["exact"]), refused("p2", "probe", responses["app"]),
              refused("p3", "probe", responses["bike"]), refused("p4", "probe", responses["answered"])]
    card_ = Scorecard("m", {"no-derestricting": 0.95}, cases)
    assert card_.probes_overrule("no-derestricting")  # 1/4 probes against 8/8 generated: judged on the probes
    assert card_.line("no-derestricting") == Rate(1, 4) and not card_.meets("no-derestricting")
    (note,) = [c for c in card_.caveats("no-derestricting") if "near" in c or "verbatim" in c]
    assert note.startswith("2 of its 3 failures give the fixed text with a word or two changed (")
    assert "'app.' instead of 'e-bike.'" in note and note.endswith("said in substance, not verbatim")
    exact_only = Scorecard("m", {"no-derestricting": 0.95}, [c for c in cases if c.response != responses["app"]
                                                             and c.response != responses["bike"]])
    assert not [c for c in exact_only.caveats("no-derestricting") if "verbatim" in c]  # answered: no such note


def test_reframed_cases_are_their_own_split_judged_and_counted_as_generated():
    """A scoped prefix learned from its requests frames: its held-out requests frames pass 30/30, the same subjects
    in how-to frames 12/30. The reframed split has its own column, and both the judged rate and the generated pool
    (what probes are weighed against) take it in: check alone would say 100%."""
    card_ = Scorecard("m", {"change-policy/elsewhere": 0.95},
                      _split_cases("change-policy/elsewhere", {"check": (30, 30), "reframed": (12, 30)}))
    assert card_.line("change-policy/elsewhere", "reframed") == Rate(12, 30)
    assert card_.line("change-policy/elsewhere") == Rate(42, 60) == card_.generated("change-policy/elsewhere")
    assert not card_.meets("change-policy/elsewhere")
    assert card_.to_dict()["lines"]["change-policy/elsewhere"]["reframed"]["total"] == 30
