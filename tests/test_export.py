"""`behavio export`: the merged model loads with plain transformers and answers like the adapter it came
from; the model card carries the spec, the scorecard and the plot; the GGUF file loads back with the
same logits (tiny llama and qwen2 models here, the embedded SmolLM2 in the e2e test)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from behavio.cli import app
from behavio.errors import BehavioError
from behavio.export import export_run
from behavio.export.to_gguf import LOGIT_TOLERANCE

pytestmark = pytest.mark.pipeline

SPEC = """\
spec: export-mini
system: "You are terse."
prompts:
  general:
    list: ["What is the sun?", "What is rain?", "What is bread?", "What is music?", "What is a river?",
           "What is snow?", "What is wind?", "What is a cat?"]
answers:
  general: {source: literal, template: "It is something people ask about."}
behaviors:
  - id: polite
    kind: prefix
    choices: ["Happy to help."]
split: {seed: 1, val: 0.1, check: 0.25, min_share: 0.05}
thresholds: {default: 0.5}
check: {max_new_tokens: 4, batch_size: 4}
"""
IDS = torch.tensor([[1, 5, 9, 200, 31, 7, 4000, 12]])


def make_run(root: Path, base_dir: Path, spec_text: str = SPEC, steps=(2, 4)) -> Path:
    """A run directory of ``base_dir`` with LoRA checkpoints that change the model (lora_B not zero)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = root / "run"
    run.mkdir()
    (run / "spec.yaml").write_text(spec_text)
    (run / "config.json").write_text(json.dumps({"base_model": str(base_dir), "spec": "export-mini", "lr": 1e-3,
                                                 "method": ["sft"], "lora_r": 4}))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "down_proj"]))
    for step in steps:
        torch.manual_seed(step)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn_like(p) * 0.3)
        out = run / f"checkpoint-{step}"
        model.save_pretrained(out)
        (out / "behavio.json").write_text(json.dumps({"spec_hash": "", "step": step, "stage": "sft", "metrics": {},
                                                      "complete": True, "base_model": str(base_dir)}))
    return run


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory, tiny_model_dir):
    """A run of the tiny model, scored by the check engine (scorecard.json/svg and ``best`` written)."""
    from behavio.check.engine import check_run

    root = tmp_path_factory.mktemp("export")
    spec = root / "export_mini.yaml"
    spec.write_text(SPEC)
    run = make_run(root, tiny_model_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BEHAVIO_CACHE", str(root / "cache"))
        mp.setenv("BEHAVIO_EMBEDDINGS", "lexical")
        check_run(spec, run, quiet=True)
    return run


def adapter_logits(base_dir: Path, adapter: Path) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), str(adapter))
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


def test_export_merges_the_best_checkpoint_into_a_model_plain_transformers_loads(scored_run, tiny_model_dir, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    best = (scored_run / "best").read_text().strip()
    result = export_run(scored_run, tmp_path / "out", dtype="fp32")
    out = result.out
    assert result.checkpoint.name == best and result.gguf is None
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        merged = model(input_ids=IDS).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()(input_ids=IDS).logits
    expected = adapter_logits(tiny_model_dir, scored_run / best)
    assert torch.allclose(merged, expected, atol=1e-4)  # the adapter's model, merged in fp32
    assert not torch.allclose(merged, base, atol=1e-3)  # ... which is not the base model
    assert not any("lora" in k for k in model.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert "<|im_start|>" in tokenizer.chat_template
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in json.loads((out / "generation_config.json").read_text())["eos_token_id"]

    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model: ") and "library_name: transformers" in card
    assert "spec: export-mini" in card and "```yaml" in card  # the spec itself
    assert f"{best}" in card and "| polite |" in card  # the exported checkpoint's scorecard
    assert "![pass rate per behavior against the training step](scorecard.svg)" in card
    assert (out / "scorecard.svg").read_text().lstrip().startswith("<")

    bf16 = export_run(scored_run, tmp_path / "bf16", checkpoint="2").out
    with safe_open(next(bf16.glob("*.safetensors")), framework="pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.bfloat16}
    assert "checkpoint-2" in (bf16 / "README.md").read_text()


def test_export_of_a_weaker_copy_merges_its_scaled_update(tiny_model_dir, tmp_path):
    """A train.strengths copy exports as the model it was checked as: the checkpoint's update times its strength."""
    from transformers import AutoModelForCausalLM

    from behavio.rundir import inspect_checkpoint
    from behavio.train.strengths import write_variants

    run = make_run(tmp_path, tiny_model_dir, steps=(4,))
    write_variants(run, inspect_checkpoint(run / "checkpoint-4"), [0.5])
    result = export_run(run, tmp_path / "out", checkpoint="4-x0.5", dtype="fp32")
    assert result.checkpoint.name == "checkpoint-4-x0.5"
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(result.out).eval()(input_ids=IDS).logits
    assert torch.allclose(merged, adapter_logits(tiny_model_dir, run / "checkpoint-4-x0.5"), atol=1e-4)
    assert not torch.allclose(merged, adapter_logits(tiny_model_dir, run / "checkpoint-4"), atol=1e-3)
    assert "scaled by 0.5 (train.strengths)" in (result.out / "README.md").read_text()


def test_export_refuses_what_it_cannot_do(scored_run, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    with pytest.raises(BehavioError, match="not an empty folder"):
        export_run(scored_run, taken)
    with pytest.raises(BehavioError, match="--dtype 'int4'"):
        export_run(scored_run, tmp_path / "a", dtype="int4")
    with pytest.raises(BehavioError, match="checkpoint-7: no such checkpoint"):
        export_run(scored_run, tmp_path / "a", checkpoint="7")
    unscored = tmp_path / "unscored"
    shutil.copytree(scored_run, unscored)
    (unscored / "best").unlink()
    (unscored / "checkpoint-4" / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(BehavioError, match="best: missing; score the run first"):
        export_run(unscored, tmp_path / "a")
    with pytest.raises(BehavioError, match="cannot be exported: .*empty file"):
        export_run(unscored, tmp_path / "a", checkpoint="4")
    result = CliRunner().invoke(app, ["export", str(unscored), str(tmp_path / "b")])
    assert result.exit_code == 2 and "score the run first" in result.stderr and not (tmp_path / "b").exists()


def _gguf_logits(out: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()(input_ids=IDS).logits
        back = AutoModelForCausalLM.from_pretrained(out, gguf_file=name, dtype=torch.float32).eval()(input_ids=IDS).logits
    return merged, back


def test_gguf_export_loads_back_with_the_same_logits(scored_run, tmp_path):
    result = CliRunner().invoke(app, ["export", str(scored_run), str(tmp_path / "out"), "--gguf", "--dtype", "fp16"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert (out / "out-fp16.gguf").is_file() and "loads back with transformers" in result.stderr
    merged, back = _gguf_logits(out, "out-fp16.gguf")
    assert (merged - back).abs().max() <= LOGIT_TOLERANCE
    assert "out-fp16.gguf" in (out / "README.md").read_text()


def test_gguf_export_of_a_qwen2_model(tmp_path, _smollm2_tokenizer_session):
    """qwen2 (q/k/v biases, no query/key permutation) exports and loads back like llama."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from conftest import TINY_LLAMA

    tokenizer = _smollm2_tokenizer_session
    base = tmp_path / "qwen2"
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         **{k: v for k, v in TINY_LLAMA.items()})
    Qwen2ForCausalLM(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    run = make_run(tmp_path, base, steps=(3,))
    result = export_run(run, tmp_path / "out", checkpoint="3", dtype="bf16", gguf=True)
    # the export's own check loaded it back and compared logits (the test above repeats that check independently)
    assert result.gguf == tmp_path / "out" / "out-bf16.gguf" and result.gguf_max_logit_diff <= LOGIT_TOLERANCE


@pytest.mark.e2e
def test_gguf_export_of_the_embedded_default_model(tmp_path):
    """SmolLM2-135M-Instruct with a LoRA adapter: merged, bf16 GGUF, loaded back by transformers (~1-2 min)."""
    from behavio.models import resolve_base_model

    base = resolve_base_model("default")
    run = make_run(tmp_path, base, steps=(1,))
    result = export_run(run, tmp_path / "smollm2", checkpoint="1", dtype="bf16", gguf=True)
    assert result.gguf.stat().st_size > 200e6 and result.gguf_max_logit_diff <= LOGIT_TOLERANCE
    print(f"largest logit difference GGUF vs safetensors: {result.gguf_max_logit_diff:.2e}")
