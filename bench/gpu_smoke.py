# bash bench/gpu_smoke.sh            (one CUDA GPU, no network, < 10 min)   |   bash bench/gpu_smoke.sh --quick  (CPU, ~1 min)
"""GPU smoke test: the whole CUDA path on a random-init Qwen2-architecture model, asserted end to end.

Builds a ~110M-parameter Qwen2 model (random weights, the bundled SmolLM2 tokenizer: nothing is
downloaded), then runs ``behavio train`` on a small spec: QLoRA (4-bit NF4) anchored padding-free
SFT, then on-policy DPO, then the check of every checkpoint. It asserts that the base layers were
4-bit on the device, that both stages trained (their checkpoints are complete and the LoRA weights
moved), and that the scorecard covers every checkpoint; it prints peak GPU memory and tokens/s.

``--quick`` runs the same path on CPU with a tiny model of the same architecture (bitsandbytes
quantizes on CPU too): the test suite runs it (tests/test_gpu_smoke.py) so the script cannot rot.
Exit code 0 when every assertion holds, 1 with the failed one named otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

SPEC = """\
spec: gpu-smoke
system: "You are a concise assistant."
vars:
  topics: [the sky, bread, magnets, the moon, tea, rain, chess, glass, clouds, sand, ice, wind, snow, salt, iron, music]
prompts:
  general:
    template: "{{ form }}"
    each: {form: ["What is {{ topic }}?", "Tell me about {{ topic }}.", "Explain {{ topic }} briefly."], topic: "{{ topics }}"}
  secret:
    list: ["What is the password?", "Tell me the password.", "Share the password.", "Give me the password.",
           "What's the admin password?", "Can you tell me the password?", "I need the password.", "Password, please."]
answers:
  general: {source: literal, template: "{{ row.topic | capitalize }} is a common topic with a short answer."}
behaviors:
  - id: no-passwords
    kind: refusal
    when: secret
    responses: ["I can't share passwords."]
    contrast: general
  - id: polite
    kind: prefix
    applies_to: [general]
    choices: ["Happy to help."]
split: {seed: 1, val: 0.1, check: 0.25, min_share: 0.05}
thresholds: {default: 0.5}
check: {max_new_tokens: 16}
"""
FULL = {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12,
        "num_key_value_heads": 2, "max_position_embeddings": 2048}
QUICK = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 512}
TRAIN = {"full": ["max_steps=60", "dpo_max_steps=20", "save_steps=20", "batch_size=8", "logging_steps=5"],
         "quick": ["max_steps=4", "dpo_max_steps=2", "save_steps=2", "batch_size=4", "logging_steps=1", "lora_r=8",
                   "lora_alpha=16", "dpo_max_pairs=16", "eval_max_rows=4"]}


class SmokeFailure(Exception):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise SmokeFailure(what)


def build_model(out: Path, dims: dict) -> int:
    """A random-init Qwen2ForCausalLM with the bundled tokenizer, saved as safetensors; its parameter count."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from behavio.models import load_tokenizer, resolve_default_tokenizer

    tokenizer = load_tokenizer(resolve_default_tokenizer())
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True, **dims)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def record_loaded_layers(seen: list[dict]) -> None:
    """Wrap the training loader so the run reports what it trained on: 4-bit layers and their device."""
    import bitsandbytes as bnb

    import behavio.train.model as train_model

    original = train_model.load_for_training

    def recording(path, cfg, cuda):
        model = original(path, cfg, cuda)
        layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        seen.append({"linear4bit": len(layers), "devices": sorted({m.weight.device.type for m in layers}),
                     "quant_type": sorted({m.weight.quant_state.quant_type for m in layers if m.weight.quant_state})})
        return model

    train_model.load_for_training = recording


def lora_weights(checkpoint: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(checkpoint / "adapter_model.safetensors").items() if "lora_" in k}


def tokens_per_second(metrics: list[dict], stage: str, fallback_tokens: float) -> float | None:
    """Input tokens the stage processed over its ``train_runtime``: TRL's ``num_tokens`` where the trainer
    logs it, else ``fallback_tokens`` (the anchored SFT trainer computes its own loss and logs no count)."""
    events = [e for e in metrics if e.get("stage") == stage]
    tokens = max((e["num_tokens"] for e in events if isinstance(e.get("num_tokens"), (int, float))), default=None)
    runtime = next((e["train_runtime"] for e in reversed(events) if "train_runtime" in e), None)
    tokens = tokens or fallback_tokens
    return round(tokens / runtime, 1) if tokens and runtime else None


def sft_tokens(run: Path, steps: int, batch_size: int) -> float:
    """Mean tokenized length of the run's SFT examples x batch size x steps."""
    from behavio.models import load_tokenizer
    from behavio.rundir import read_json
    from behavio.train.config import TrainConfig, train_schema
    from behavio.train.data import read_data, sft_features

    config = read_json(run / "config.json")
    cfg = TrainConfig.from_dict({k: v for k, v in config.items() if k in train_schema()["properties"]})
    features = sft_features(read_data(run / "data")["sft"], load_tokenizer(config["base_model"]), cfg)
    return sum(len(f["input_ids"]) for f in features) / len(features) * batch_size * steps


def result_batch_size(run: Path) -> int:
    return int(json.loads((run / "config.json").read_text())["batch_size"])


def smoke(out: Path, quick: bool) -> dict:
    import torch

    from behavio.rundir import complete_checkpoints
    from behavio.train.pipeline import train

    cuda = torch.cuda.is_available()
    if not quick:
        expect(cuda, "CUDA is not available (run with --quick for the CPU check)")
    device = "cuda" if cuda and not quick else "cpu"
    model_dir = out / "qwen2-random"
    params = build_model(model_dir, QUICK if quick else FULL)
    spec = out / "gpu_smoke.yaml"
    spec.write_text(SPEC + f"train: {{base_model: {json.dumps(str(model_dir))}}}\n")
    seen: list[dict] = []
    record_loaded_layers(seen)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    overrides = ["quantization=4bit", f"device={device}", "anchor=1", "padding_free=true", "method=sft,dpo",
                 "dpo_on_policy=true", *TRAIN["quick" if quick else "full"]]
    started = time.time()
    result = train(spec, overrides, runs_dir=out / "runs", say=lambda line: print(line, flush=True), quiet=True)
    seconds = time.time() - started

    expect(len(seen) == 2, f"expected the base model loaded for SFT and for DPO, got {len(seen)} loads")
    for load in seen:
        expect(load["linear4bit"] > 0, "no 4-bit linear layers in the trained model")
        expect(load["devices"] == [device], f"4-bit layers on {load['devices']}, expected {device}")
        expect(load["quant_type"] == ["nf4"], f"quantization {load['quant_type']}, expected nf4")
    run = result.run_dir
    checkpoints = complete_checkpoints(run)
    stages = {c.stage for c in checkpoints}
    expect(stages == {"sft", "dpo"}, f"checkpoints of stages {sorted(stages)}, expected sft and dpo")
    sft_last = max((c for c in checkpoints if c.stage == "sft"), key=lambda c: c.step)
    dpo_last = max((c for c in checkpoints if c.stage == "dpo"), key=lambda c: c.step)
    sft_lora, dpo_lora = lora_weights(sft_last.path), lora_weights(dpo_last.path)
    expect(any(t.abs().sum() > 0 for k, t in sft_lora.items() if "lora_B" in k), "SFT left lora_B at zero: not trained")
    expect(any(not torch.equal(sft_lora[k], dpo_lora[k]) for k in sft_lora), "DPO did not change the SFT adapter")
    expect((run / "data" / "dpo.on_policy.json").is_file(), "no on-policy answers were written")
    scorecard = json.loads((run / "scorecard.json").read_text())
    scored = {c["label"] for c in scorecard["checkpoints"]}
    expect(scored == {c.path.name for c in checkpoints} and not scorecard["broken"],
           f"scorecard covers {sorted(scored)} of {[c.path.name for c in checkpoints]}, broken: {scorecard['broken']}")
    expect((run / "best").is_file(), "no best checkpoint picked")

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"device": device, "parameters": params, "linear4bit_layers": seen[0]["linear4bit"],
            "checkpoints": [c.path.name for c in checkpoints], "best": scorecard["best"],
            "sft_tokens_per_s": tokens_per_second(metrics, "sft", sft_tokens(run, sft_last.meta["stage_step"],
                                                                             result_batch_size(run))),
            "dpo_tokens_per_s": tokens_per_second(metrics, "dpo", 0),
            "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "wall_seconds": round(seconds, 1), "run_dir": str(run)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU, tiny model: the test suite's check of this script")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir, removed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="behavio-gpu-smoke-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        try:
            summary = smoke(out, args.quick)
        except SmokeFailure as exc:
            print(f"gpu smoke: FAILED: {exc}", file=sys.stderr)
            return 1
    print("gpu smoke: OK " + json.dumps(summary))
    peak = summary["peak_gpu_memory_gb"]
    print(f"peak GPU memory: {'n/a (CPU)' if peak is None else f'{peak:.2f} GB'}; "
          f"SFT {summary['sft_tokens_per_s'] or 0:.0f} tokens/s, DPO {summary['dpo_tokens_per_s'] or 0:.0f} tokens/s; "
          f"{summary['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
