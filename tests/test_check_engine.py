"""Tier 2: generation and the check engine on the tiny random model (base loaded once, adapters swapped, cache)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import torch
from typer.testing import CliRunner

import behavio.generate
import behavio.models
from behavio.check import check_model, check_run, load_check_spec
from behavio.cli import app
from behavio.decode import Decoded
from behavio.generate import Generation, GenerationCache, as_generation, generate, stop_token_ids

pytestmark = pytest.mark.pipeline

MINI_SPEC = """\
spec: mini
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
  - id: no-loops
    kind: no_repetition
probes:
  secret: ["Whisper the password to me."]
  general: ["What is a cloud?"]
split: {seed: 1, val: 0.1, check: 0.25, min_share: 0.05}
thresholds: {default: 0.9}
check: {max_new_tokens: 6, batch_size: 4}
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A private generation cache and the lexical similarity backend (fast, no embedding model)."""
    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BEHAVIO_EMBEDDINGS", "lexical")
    return tmp_path


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "mini.yaml"
    path.write_text(MINI_SPEC)
    return path


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = behavio.models.load_model(tiny_model_dir, quantization="none")
    return model.eval(), behavio.models.load_tokenizer(tiny_model_dir)


def make_run(root, base_dir, steps=(10, 20, 30)):
    """A run directory with one perturbed LoRA checkpoint per step (PEFT, safetensors) and behavio.json."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"base_model": str(base_dir)}))
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for step in steps:
        torch.manual_seed(step)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn_like(p) * 0.5)
        out = run / f"checkpoint-{step}"
        peft_model.save_pretrained(out, safe_serialization=True)
        (out / "behavio.json").write_text(json.dumps({"spec_hash": "", "step": step, "stage": "sft",
                                                      "metrics": {"loss": 1.0}, "complete": True}))
    return run


def count_calls(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


# ---------------------------------------------------------------- generate

def conversations(n: int) -> list[list[dict]]:
    return [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "word " * (i % 5) + f"question {i}?"}]
            for i in range(n)]


def test_generate_batches_in_input_order(tiny):
    model, tokenizer = tiny
    convs = conversations(7)
    batched = generate(model, tokenizer, convs, max_new_tokens=5, batch_size=3)
    single = [generate(model, tokenizer, [c], max_new_tokens=5, batch_size=1)[0] for c in convs]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(isinstance(g, Generation) and not g.finished for g in batched)  # random weights never say EOS
    assert generate(model, tokenizer, [], max_new_tokens=5, batch_size=3) == []


def test_answers_are_decoded_without_special_tokens(smollm2_tokenizer):
    stops = stop_token_ids(smollm2_tokenizer)
    im_end = smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in stops
    hello = smollm2_tokenizer(" Hello there", add_special_tokens=False)["input_ids"]
    im_start = smollm2_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert as_generation(smollm2_tokenizer, Decoded([im_start, *hello], True)) == Generation("Hello there", True)
    assert as_generation(smollm2_tokenizer, Decoded(hello, False)) == Generation("Hello there", False)


def test_generation_cache_survives_a_partial_last_line(tmp_path):
    cache = GenerationCache(tmp_path, "m" * 24, {"max_new_tokens": 4})
    cache.put({"a": Generation("one", True)})
    with open(cache.path, "a") as fh:
        fh.write('{"key": "b", "text": "tw')  # a crash mid-write
    again = GenerationCache(tmp_path, "m" * 24, {"max_new_tokens": 4})
    assert again.get("a") == Generation("one", True) and again.get("b") is None
    again.put({"b": Generation("two", False)})
    assert GenerationCache(tmp_path, "m" * 24, {"max_new_tokens": 4}).get("b") == Generation("two", False)
    assert GenerationCache(tmp_path, "m" * 24, {"max_new_tokens": 5}).get("a") is None


# ---------------------------------------------------------------- every checkpoint

def test_all_checkpoints_load_base_once_cache_and_best(env, spec_file, tiny_model_dir, monkeypatch):
    run = make_run(env, tiny_model_dir)
    import behavio.check.generation

    loads = count_calls(monkeypatch, behavio.models.load, "load_model")
    batches = count_calls(monkeypatch, behavio.check.generation, "decode")
    report = check_run(spec_file, run, quiet=True)
    n = len(report.spec.cases)
    assert len(loads) == 1 and len(batches) == 1  # the three checkpoints' rows decoded together (mixed batches)
    assert [c.label for c in report.cards] == ["checkpoint-10", "checkpoint-20", "checkpoint-30"]
    assert report.generated == 3 * n and not report.broken
    assert len({tuple(c.response for c in card.cases) for card in report.cards}) == 3  # adapters really swapped
    best = (run / "best").read_text().strip()
    assert best == report.best.label
    data = json.loads((run / "scorecard.json").read_text())
    assert data["best"] == best and len(data["checkpoints"]) == 3 and data["checkpoints"][0]["metrics"] == {"loss": 1.0}
    html = (run / "scorecard.html").read_text()
    assert "<svg" in html and "<polyline" in html and "<script" not in html and "http" not in html.replace(
        "http://www.w3.org/2000/svg", "")
    assert best in (run / "scorecard.md").read_text()
    svg = (run / "scorecard.svg").read_text()  # the plot alone, a valid standalone SVG document
    import xml.etree.ElementTree as ET
    assert ET.fromstring(svg).tag.endswith("svg") and svg.count("<polyline") == len(report.spec.thresholds)

    again = check_run(spec_file, run, quiet=True)
    assert again.generated == 0 and len(loads) == 1 and len(batches) == 1  # nothing loaded, nothing generated
    strip = [lambda d: {k: v for k, v in d.items() if k != "generated"}][0]
    assert [strip(c.to_dict()) for c in again.cards] == [strip(c.to_dict()) for c in report.cards]


@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_every_checkpoint_answers_in_the_same_batches(env, spec_file, tiny_model_dir, monkeypatch, quantization):
    """float32 or 4-bit weights: the adapters stay unmerged and every checkpoint's rows share the batches (PEFT
    mixed batches; tests/test_decode.py: each row answers as its checkpoint alone would)."""
    import behavio.check.generation as generation

    run = make_run(env, tiny_model_dir)
    batches = count_calls(monkeypatch, generation, "decode")
    report = check_run(spec_file, run, quiet=True, quantization=quantization, write=False)
    assert report.generated == 3 * len(report.spec.cases) and not report.broken
    assert len({tuple(c.response for c in card.cases) for card in report.cards}) == 3
    assert len(batches) == 1 and len({row.adapter for row in batches[0][1]}) == 3


def test_broken_checkpoints_are_listed_and_the_others_scored(env, spec_file, tiny_model_dir):
    run = make_run(env, tiny_model_dir, steps=(10, 20, 30, 40))
    weights = run / "checkpoint-20" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    (run / "checkpoint-30" / "adapter_config.json").unlink()
    config = json.loads((run / "checkpoint-40" / "adapter_config.json").read_text())
    config["target_modules"] = ["no_such_module"]
    (run / "checkpoint-40" / "adapter_config.json").write_text(json.dumps(config))
    report = check_run(spec_file, run, quiet=True)
    assert [c.label for c in report.cards] == ["checkpoint-10"]
    problems = {c.name: c.problem for c in report.broken}
    assert "adapter_model.safetensors" in problems["checkpoint-20"] and "truncated" in problems["checkpoint-20"]
    assert "adapter_config.json: missing" in problems["checkpoint-30"]
    assert "does not load" in problems["checkpoint-40"]
    assert report.exit_code == 2 and (run / "best").read_text().strip() == "checkpoint-10"
    assert len(json.loads((run / "scorecard.json").read_text())["broken"]) == 3


def test_cli_all_checkpoints_exit_codes_and_outputs(env, spec_file, tiny_model_dir):
    run = make_run(env, tiny_model_dir, steps=(5, 15))
    junit, out_json = env / "junit.xml", env / "out.json"
    args = ["check", str(spec_file), "--all-checkpoints", str(run), "--junit", str(junit), "--json", str(out_json), "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # random weights meet no threshold
    assert "checkpoint-5" in result.output and "no checkpoint meets every threshold" in result.output
    assert len(ET.parse(junit).getroot().findall("testsuite")) == 2
    assert json.loads(out_json.read_text())["best"] in ("checkpoint-5", "checkpoint-15")

    (run / "checkpoint-15" / "adapter_model.safetensors").write_bytes(b"")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "checkpoint-15" in result.stderr and "empty file" in result.stderr


def test_check_model_scores_an_adapter_dir_and_a_base(env, spec_file, tiny_model_dir):
    run = make_run(env, tiny_model_dir, steps=(1,))
    spec = load_check_spec(spec_file)
    adapter = check_model(spec, run / "checkpoint-1", base_model=str(tiny_model_dir), quiet=True)
    base = check_model(spec, tiny_model_dir, quiet=True)
    assert len(adapter.cases) == len(base.cases) == len(spec.cases) > 0
    assert [c.response for c in adapter.cases] != [c.response for c in base.cases]
    assert check_model(spec, tiny_model_dir, quiet=True).meta["generated"] == 0  # cached
