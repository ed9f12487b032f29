"""Filling pending answer bodies: marker replacement, tidying, the persistent cache, `compile --fill`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import behavio.models
from behavio.cli import app
from behavio.compiler.build import compile_spec
from behavio.pending import marker as pending_marker
from behavio.compiler.output import write_compiled
from behavio.errors import BehavioError
from behavio.fill import FILLED_FILES, fill_compiled_dir, fill_pending, fill_rows, tidy_body
from behavio.generate import Generation

MINI = """\
spec: mini-fill
system: "You are terse."
prompts:
  general:
    list: ["What is the sun?", "What is rain?", "What is bread?", "What is music?", "What is a river?",
           "What is snow?", "What is wind?", "What is a cat?"]
  secret:
    list: ["What is the password?", "Tell me the password.", "Share the password.", "Give me the password."]
answers:
  general: {source: model}
behaviors:
  - id: no-passwords
    kind: refusal
    when: secret
    responses: ["I can't share passwords."]
    contrast: general
  - id: polite
    kind: prefix
    choices: ["Happy to help."]
split: {seed: 1, val: 0.1, check: 0.25, min_share: 0.05}
thresholds: {default: 0.9}
"""


def test_fill_rows_replaces_markers_everywhere_and_clears_pending():
    a, b = "a" * 16, "b" * 16
    rows = [
        {"id": "s", "messages": [{"role": "assistant", "content": f"Hi. {pending_marker(a)}"}], "pending": [a]},
        {"id": "d", "prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": pending_marker(a)}],
         "rejected": [{"role": "assistant", "content": f"{pending_marker(b)} and {pending_marker(a)}"}], "pending": [a, b]},
        {"id": "c", "reference": f"Hi. {pending_marker(b)}", "rules": [], "messages": []},
    ]
    filled = fill_rows(rows, {a: "body A", b: "body B"})
    assert filled[0]["messages"][0]["content"] == "Hi. body A" and filled[0]["pending"] == []
    assert filled[1]["chosen"][0]["content"] == "body A" and filled[1]["rejected"][0]["content"] == "body B and body A"
    assert filled[2]["reference"] == "Hi. body B" and "pending" not in filled[2]
    assert rows[0]["pending"] == [a]  # input untouched
    with pytest.raises(BehavioError, match=f"row s: no answer for pending key {a}"):
        fill_rows(rows[:1], {})


def test_tidy_body_strips_and_trims_only_cut_answers():
    assert tidy_body(Generation("  Rain is water. It falls.  ", True)) == "Rain is water. It falls."
    assert tidy_body(Generation("Rain is water. It falls from", False)) == "Rain is water."
    assert tidy_body(Generation("Rain is water that falls from", False)) == "Rain is water that falls from"
    assert tidy_body(Generation("Rain is water. It falls from", False), trim_unfinished=False) == "Rain is water. It falls from"


def test_tidy_body_drops_the_courtesy_an_answer_opens_with():
    assert tidy_body(Generation("I'm sorry for any confusion. I'm here to help. You can pay by card.", True)) == \
        "You can pay by card."
    assert tidy_body(Generation("Hey there, welcome! Rain is water. It falls from", False)) == "Rain is water."
    persona = "Marina, welcome to the Harbourview Hotel. I'm so glad you're enjoying your stay. The pool is heated."
    assert tidy_body(Generation(persona, True)) == "The pool is heated."
    assert tidy_body(Generation("Yes, the pool is heated. Marina, welcome!", True)) == "Yes, the pool is heated. Marina, welcome!"
    kept = ["I'm sorry for your loss. I'm here to help.",  # courtesy alone: left for the judge, which drops it
            "I'm sorry for your loss, but as a travel agency, I'm unable to help.",  # a refusal: the judge drops it too
            "I'm sorry for the trouble: the charge is a pending authorization.", "Rain is water. Thanks for asking!"]
    assert [tidy_body(Generation(text, True)) for text in kept] == kept


@pytest.fixture
def compiled_mini(tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    spec = tmp_path / "mini.yaml"
    spec.write_text(MINI)
    target, _ = write_compiled(compile_spec(spec), tmp_path / "generated")
    return spec, target


@pytest.mark.pipeline
def test_fill_compiled_dir_then_cached(compiled_mini, tiny_model_dir, monkeypatch):
    _, target = compiled_mini
    pending = [json.loads(line) for line in (target / "pending.jsonl").read_text().splitlines()]
    assert pending
    out = fill_compiled_dir(target, str(tiny_model_dir), max_new_tokens=6, quiet=True)
    assert out == target / "filled"
    for name in FILLED_FILES:
        text = (out / f"{name}.jsonl").read_text()
        assert "<<behavio:pending:" not in text
        assert all(json.loads(line).get("pending", []) == [] for line in text.splitlines())
    sft = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    assert any(r["messages"][-1]["content"].startswith("Happy to help. ") for r in sft)

    def no_loading(*args, **kwargs):
        raise AssertionError("the second fill must come from the cache")

    monkeypatch.setattr(behavio.models.load, "load_model", no_loading)
    again = fill_pending(pending, str(tiny_model_dir), max_new_tokens=6)
    assert set(again) == {p["key"] for p in pending}
    assert fill_compiled_dir(target, str(tiny_model_dir), max_new_tokens=6) == out
    with pytest.raises(AssertionError, match="from the cache"):
        fill_pending(pending, str(tiny_model_dir), max_new_tokens=7)  # other settings: not cached


@pytest.mark.pipeline
def test_compile_fill_cli(compiled_mini, tiny_model_dir, tmp_path):
    spec, _ = compiled_mini
    result = CliRunner().invoke(app, ["compile", str(spec), "--out", str(tmp_path / "gen2"), "--fill",
                                      "--base-model", str(tiny_model_dir), "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "gen2" / "mini-fill" / "filled" / "checks.jsonl").is_file()


@pytest.mark.pipeline
def test_asked_again_an_answer_opens_with_the_next_best_token_then_goes_on_greedily(compiled_mini, tiny_model_dir):
    """refill_pending's choice 0 is the fill's own greedy answer; choice 1 opens with the second-ranked first token and
    continues as transformers' greedy generate() continues from it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from behavio.fill import refill_pending
    from behavio.generate import encode_conversation, stop_token_ids

    _, target = compiled_mini
    pending = [json.loads(line) for line in (target / "pending.jsonl").read_text().splitlines()][:3]
    settings = {"max_new_tokens": 6, "trim_unfinished": False}
    greedy = fill_pending(pending, str(tiny_model_dir), **settings)
    assert refill_pending(pending, {}, str(tiny_model_dir), choice=0, **settings) == greedy
    second = refill_pending(pending, {}, str(tiny_model_dir), choice=1, **settings)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for row in pending:
        prompt = encode_conversation(row["messages"], tokenizer)
        with torch.no_grad():
            ranked = model(input_ids=torch.tensor([prompt])).logits[0, -1].topk(2).indices.tolist()
            out = model.generate(torch.tensor([[*prompt, ranked[1]]]), max_new_tokens=5, do_sample=False,
                                 eos_token_id=stop_token_ids(tokenizer, model), pad_token_id=tokenizer.pad_token_id)
        expected = tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True).strip()
        assert second[row["key"]] == expected and second[row["key"]] != greedy[row["key"]]


def test_fill_nothing_pending_needs_no_model():
    assert fill_pending([], "no-such-model") == {}


@pytest.mark.pipeline
def test_weights_overwritten_at_the_same_size_miss_the_answer_cache(compiled_mini, tiny_model_dir, tmp_path,
                                                                     monkeypatch):
    import shutil

    from conftest import overwrite_weights_same_size

    _, target = compiled_mini
    pending = [json.loads(line) for line in (target / "pending.jsonl").read_text().splitlines()]
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    fill_pending(pending, str(model), max_new_tokens=4)
    loads = []
    original = behavio.models.load.load_model
    monkeypatch.setattr(behavio.models.load, "load_model", lambda *a, **k: loads.append(a) or original(*a, **k))
    fill_pending(pending, str(model), max_new_tokens=4)
    assert loads == []  # cached
    overwrite_weights_same_size(model)
    fill_pending(pending, str(model), max_new_tokens=4)
    assert len(loads) == 1  # other weights: generated again


def test_fill_settings_are_the_runs_own_and_all_in_the_cache_key(monkeypatch, tmp_path):
    """device, fold, trust and the resolved dtype/quantization reach fill and its cache key."""
    from behavio.generate import GenerationCache, generation_settings
    from behavio.models import load_settings
    from behavio.train.config import TrainConfig

    cfg = TrainConfig(device="cpu", fold_system=True, trust_remote_code=True, quantization="4bit",
                      fill_max_new_tokens=33, fill_batch_size=5)
    from behavio.fill import run_fill_settings

    assert run_fill_settings(cfg) == {"max_new_tokens": 33, "batch_size": 5, "quantization": "4bit",
                                      "trust_remote_code": True, "device": "cpu", "fold": True}
    plain = generation_settings("answers", max_new_tokens=8, fold="auto", load=load_settings("none", "cpu"))
    variants = [generation_settings("answers", max_new_tokens=8, fold=True, load=load_settings("none", "cpu")),
                generation_settings("answers", max_new_tokens=8, fold="auto", load=load_settings("4bit", "cpu")),
                generation_settings("answers", max_new_tokens=8, fold="auto", load=load_settings("none", "cpu", "bf16")),
                {**plain, "device": "cuda"}, {**plain, "backend": "openai"}, {**plain, "decoding": "sampled"}]
    paths = {GenerationCache(tmp_path, "m" * 24, s).path for s in [plain, *variants]}
    assert len(paths) == 1 + len(variants)


def test_tidy_body_does_not_end_a_cut_list_on_its_number_or_its_lead_in():
    cut_after_number = "Clay soil is heavy. Here's a step-by-step guide:\n\n1."
    assert tidy_body(Generation(cut_after_number, False)) == "Clay soil is heavy."
    cut_in_second_step = "Here's how:\n\n1. Open the chat box.\n2. Click on"
    assert tidy_body(Generation(cut_in_second_step, False)) == "Here's how:\n\n1. Open the chat box."
    only_a_lead_in = "You can try the following:\n\n1."
    assert tidy_body(Generation(only_a_lead_in, False)) == "You can try the following:"
    assert tidy_body(Generation("Steps:\n1. Restart it.\n2. Check the cable.", True)).endswith("2. Check the cable.")
