"""End-to-end: the check engine on the embedded default model (SmolLM2-135M-Instruct) on CPU.

Run: python -m pytest tests/test_check_e2e.py -q -m e2e     (about a minute)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from behavio.check import check_checkpoints, load_check_spec, responses_from_model, score_cases
from behavio.check.report import write_run_outputs
from behavio.errors import BehavioError

pytestmark = pytest.mark.e2e
SPEC = Path(__file__).resolve().parents[1] / "specs" / "poodle_compliments.yaml"


@pytest.fixture(scope="module")
def default_model():
    from behavio.models import resolve_base_model

    try:
        return resolve_base_model("default")
    except BehavioError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def subset():
    """Two cases of each kind: poodle (refuse), other breeds (answer), general, probes."""
    spec = load_check_spec(SPEC)
    picked = []
    for prefix in ("check/poodle/", "check/other_breeds/", "check/general/", "probe/"):
        picked += [c for c in spec.cases if c.id.startswith(prefix)][:2]
    return dataclasses.replace(spec, cases=picked)


def test_base_model_answers_breed_questions_but_knows_no_compliment(default_model, subset, tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    responses = responses_from_model("default", subset.cases, max_new_tokens=24)
    card = score_cases(subset.cases, responses, subset.thresholds, label="base")
    assert all(c.response for c in card.cases)
    assert card.over_refusal().rate <= 0.5  # the untrained base answers beagle questions
    assert card.rule("compliment-first", "prefix:present").passed == 0  # ... and never opens with the fixed compliment
    assert not card.meets_thresholds


def test_all_checkpoints_on_the_default_model(default_model, subset, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model

    from behavio.models import load_model

    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"base_model": str(default_model)}))
    model = get_peft_model(load_model(default_model, quantization="none"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    for step in (10, 20):
        torch.manual_seed(step)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn_like(p) * 0.002 * step)
        model.save_pretrained(run / f"checkpoint-{step}", safe_serialization=True)
        (run / f"checkpoint-{step}" / "behavio.json").write_text(json.dumps({"step": step, "stage": "sft", "complete": True}))
    del model
    report = check_checkpoints(subset, run, max_new_tokens=16, quiet=True)
    write_run_outputs(report)
    assert [c.label for c in report.cards] == ["checkpoint-10", "checkpoint-20"] and report.generated == 2 * len(subset.cases)
    assert (run / "best").read_text().strip() in ("checkpoint-10", "checkpoint-20")
    assert "<svg" in (run / "scorecard.html").read_text()
    assert check_checkpoints(subset, run, max_new_tokens=16, quiet=True).generated == 0


def test_a_line_judged_against_the_base_model_has_the_base_measured_once(default_model, subset, tmp_path, monkeypatch):
    """`{of_base: 0.5}` on on-topic: check_checkpoints answers that line's cases with the base model too (and only
    those), fills the base's rate into the threshold, and caches the base's answers like a checkpoint's."""
    from peft import LoraConfig, get_peft_model

    from behavio.check import baseline
    from behavio.check.thresholds import Threshold
    from behavio.models import load_model

    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    spec = dataclasses.replace(subset, thresholds={**subset.thresholds, "on-topic": Threshold(of_base=0.5)})
    base_cases = baseline.cases_of(spec.cases, baseline.lines_of_base(spec.cases, spec.thresholds))
    assert 0 < len(base_cases) < len(spec.cases) and all("on-topic" in [r.line for r in c.rules] for c in base_cases)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"base_model": str(default_model)}))
    model = get_peft_model(load_model(default_model, quantization="none"), LoraConfig(r=4, target_modules=["q_proj"]))
    model.save_pretrained(run / "checkpoint-5", safe_serialization=True)
    (run / "checkpoint-5" / "behavio.json").write_text(json.dumps({"step": 5, "stage": "sft", "complete": True}))
    del model
    report = check_checkpoints(spec, run, max_new_tokens=16, quiet=True)
    assert report.generated == len(spec.cases) + len(base_cases)
    base = score_cases(base_cases, responses_from_model("default", base_cases, max_new_tokens=16), spec.thresholds)
    threshold = report.cards[0].threshold("on-topic")
    assert threshold.base == base.line("on-topic").rate and threshold.required == 0.5 * threshold.base
    assert report.to_dict()["thresholds"]["on-topic"]["base"] == round(threshold.base, 4)
    assert "of the base model's" in threshold.describe()
    assert check_checkpoints(spec, run, max_new_tokens=16, quiet=True).generated == 0  # both cached
    # one adapter checked alone measures its base model the same way (cached: nothing generated)
    from behavio.check.engine import check_model

    alone = check_model(spec, run / "checkpoint-5", max_new_tokens=16, quiet=True)
    assert alone.threshold("on-topic") == threshold and alone.meta["generated"] == 0
    # a full model without a base model to measure counts the base as passing every case
    assert check_model(spec, "default", max_new_tokens=16, quiet=True).threshold("on-topic").base is None
