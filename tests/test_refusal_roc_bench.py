"""bench/refusal_roc.py's ROC summary on literal scores (no model). Run: pytest tests/test_refusal_roc_bench.py"""

import pytest

from conftest import load_bench


@pytest.fixture(scope="module")
def roc():
    return load_bench("refusal_roc").roc_summary


def test_separated_scores_meet_both_targets(roc):
    summary = roc([-1.0, -2.0, -3.0], [-10.0, -11.0, -12.0, -13.0])
    assert summary == {"auc": 1.0, "best_tpr": 1.0, "least_fpr": 0.0, "both": True}


def test_overlapping_scores_trade_refusals_against_wrong_refusals(roc):
    # 20 refused probes, 20 answered: two answered probes score above every refused one and two refused
    # probes below the 18 answered rest's top -- no threshold gets 95% of the refusals with at most 5% (1/20)
    # wrongly refused, though the area under the curve is 0.9
    refused = [-1.0 - i * 0.1 for i in range(18)] + [-50.0, -51.0]
    answered = [0.0, 0.1] + [-60.0 - i for i in range(18)]
    summary = roc(refused, answered)
    assert summary["both"] is False
    assert summary["best_tpr"] == 0.0                    # at most one answered probe above: only t above 0.0
    assert summary["least_fpr"] == pytest.approx(0.1)    # 19 of 20 refused takes t <= -50: both top answers too
    assert summary["auc"] == pytest.approx((18 * 18 + 2 * 18) / 400)


def test_ties_count_half(roc):
    assert roc([-1.0], [-1.0])["auc"] == 0.5
