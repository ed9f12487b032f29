"""fill and check use the run's own device, fold and trust settings (not the defaults)."""

from __future__ import annotations

import json

import pytest
import torch

import behavio.check.engine
import behavio.fill
import behavio.models.load
from behavio.check.cases import CheckCase

pytestmark = pytest.mark.pipeline

MESSAGES = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi?"}]
CASES = [CheckCase(id="c1", messages=MESSAGES)]


def spy(monkeypatch, module, name) -> list[dict]:
    """Record the keyword arguments of every call to ``module.name`` (still calling it)."""
    calls: list[dict] = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def adapter_run(root, base_dir, fold_system):
    """``root/run/checkpoint-1``: a LoRA adapter in a run whose config.json folds as ``fold_system``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"base_model": str(base_dir), "fold_system": fold_system}))
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(run / "checkpoint-1", safe_serialization=True)
    return run / "checkpoint-1"


def test_fill_generates_with_the_given_fold_device_and_trust(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    loads = spy(monkeypatch, behavio.models.load, "load_model")
    gens = spy(monkeypatch, behavio.fill, "generate_cached")
    pending = [{"key": "k1", "messages": MESSAGES}]
    behavio.fill.fill_pending(pending, str(tiny_model_dir), max_new_tokens=3, fold=True, device="cpu")
    assert gens[-1]["fold"] is True
    assert loads[-1]["device"] == "cpu" and loads[-1]["trust_remote_code"] is False
    behavio.fill.fill_pending(pending, str(tiny_model_dir), max_new_tokens=3, fold=False, device="cpu")
    assert len(gens) == 2 and gens[-1]["fold"] is False  # another fold is another cache entry


def test_single_adapter_check_folds_like_its_run(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    adapter = adapter_run(tmp_path, tiny_model_dir, fold_system=True)
    gens = spy(monkeypatch, behavio.check.engine, "answer")
    loads = spy(monkeypatch, behavio.models.load, "load_model")
    behavio.check.engine.generate_responses(adapter, CASES, max_new_tokens=3, batch_size=2, device="cpu", quiet=True)
    assert gens[-1]["fold"] is True and loads[-1]["device"] == "cpu"
    behavio.check.engine.generate_responses(tiny_model_dir, CASES, max_new_tokens=3, batch_size=2, quiet=True)
    assert gens[-1]["fold"] == "auto"  # a plain model has no run to follow


def test_post_training_check_gets_the_runs_device_and_fold(tmp_path, monkeypatch):
    from behavio.train import pipeline
    from behavio.train.config import TrainConfig

    seen = {}

    def fake_check_run(spec_path, run_dir, **kwargs):
        seen.update(kwargs)
        return type("Report", (), {"best": None})()

    monkeypatch.setattr(behavio.check.engine, "check_run", fake_check_run)
    cfg = TrainConfig(device="cpu", fold_system=False, trust_remote_code=True, quantization="4bit")
    pipeline.score_run("spec.yaml", tmp_path, cfg, tmp_path, say=lambda _: None)
    assert {k: seen[k] for k in ("device", "fold", "trust_remote_code", "quantization")} == {
        "device": "cpu", "fold": False, "trust_remote_code": True, "quantization": "4bit"}
