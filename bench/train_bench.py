# python bench/train_bench.py --runs 3 --steps 20        (SmolLM2-135M on CPU; writes nothing, prints a table)
# python bench/train_bench.py --variants "behavio anchor=0,behavio anchor=1" --steps 12   (the anchor's cost)
# python bench/train_bench.py --variants "behavio lora_dropout=0.05,behavio lora_dropout=0" --steps 12   (dropout's cost)
# python bench/train_bench.py --variants "behavio anchor=0,behavio anchor=1" --tiny-vocab 151936 --overrides batch_size=32
"""Training throughput: behavio's SFT stage vs a plain TRL SFTTrainer script on the same job.

Same model (the embedded SmolLM2-135M-Instruct unless --model), same SFT rows (the poodle spec,
answers filled from the cache), batch size, LoRA settings, steps and seed. Each job runs in a fresh
process; we report tokens/s (TRL's ``num_tokens`` over the trainer's ``train_runtime``) and peak RSS,
the median of ``--runs``, and ratios against the first variant. Variants: behavio with padding_free and
packing, and with the anchor off and on (its one-time pass over the data is reported apart from the
steps). ``--tiny-vocab N`` trains a small random Llama with an N-token vocabulary instead (e.g.
151936, Qwen2.5's): what the anchor's memory does with a large vocabulary. ``PYTHONPATH=<checkout>``
runs the same bench against another version of behavio (a before/after comparison).

The plain TRL script trains on whole conversations (TRL's assistant_only_loss needs {% generation %}
markers SmolLM2's template lacks); behavio masks everything but the assistant turns. The tokens fed
through the model are the same, so tokens/s compares the machinery, not the loss.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the behavio CLI sets it (behavio/process_settings.py); the workers inherit it
SPEC = ROOT / "specs" / "poodle_compliments.yaml"
VARIANTS = {"trl": [], "behavio": [], "behavio padding_free": ["padding_free=true"], "behavio packing": ["packing=true"],
            "behavio anchor=0": ["anchor=0"], "behavio anchor=1": ["anchor=1"],
            "behavio lora_dropout=0.05": ["lora_dropout=0.05"], "behavio lora_dropout=0": ["lora_dropout=0"]}


def _rows(cfg) -> list[dict]:
    """The poodle spec's SFT rows with pending answers filled (cached after the first fill)."""
    from behavio.compiler.build import compile_spec
    from behavio.fill import fill_pending, fill_rows, run_fill_settings
    from behavio.models import resolve_base_model
    from behavio.jsonio import parse_jsonl

    compiled = compile_spec(SPEC)
    rows = parse_jsonl(compiled.files["sft.jsonl"])
    keys = {k for r in rows for k in r["pending"]}
    pending = [p for p in parse_jsonl(compiled.files["pending.jsonl"]) if p["key"] in keys]
    answers = fill_pending(pending, str(resolve_base_model("default")), quiet=True, **run_fill_settings(cfg))
    return fill_rows(rows, answers)


def _worker(kind: str, overrides: list[str], steps: int, model: str) -> dict:
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from behavio.models import load_tokenizer, resolve_base_model
    from behavio.train.config import resolve_config
    from behavio.train.data import refusal_openings, sft_dataset
    from behavio.train.model import load_for_training, lora_config, new_adapter
    from behavio.rundir import MetricsLog
    from behavio.train.stage import Stage

    cfg = resolve_config({"base_model": model}, [f"max_steps={steps}", f"save_steps={steps}", "eval_max_rows=0",
                                                 "logging_steps=5", *overrides])
    path = resolve_base_model(cfg.base_model)
    tokenizer = load_tokenizer(path)
    rows = _rows(cfg)
    out = Path(tempfile.mkdtemp(prefix="train-bench-"))
    start = time.time()
    if kind == "trl":  # the plain script a TRL user would write
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        args = SFTConfig(output_dir=str(out), per_device_train_batch_size=cfg.batch_size, max_steps=steps,
                         learning_rate=cfg.lr, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
                         logging_steps=5, save_strategy="steps", save_steps=steps, report_to="none", seed=cfg.seed,
                         max_length=cfg.max_length, activation_checkpointing=False, bf16=False, use_cpu=True)
        trainer = SFTTrainer(model=base, args=args, processing_class=tokenizer, peft_config=lora_config(cfg),
                             train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in rows]))
    else:  # behavio's SFT stage: masked, pre-tokenized data, its callback publishing checkpoints
        model = new_adapter(load_for_training(path, cfg, cuda=False), cfg)
        said: list[str] = []
        stage = Stage("sft", run_dir=out, cfg=cfg, spec_hash="bench", base_model=str(path), cuda=False,
                      metrics=MetricsLog(out, tensorboard=False), say=said.append)
        from behavio.train import budget
        from behavio.train.sft import run_sft

        timers = []  # the stage's step timer: every step's seconds but the first (warm-up)
        begin = budget.StageTimer.begin
        budget.StageTimer.begin = lambda timer, step: (timers.append(timer), begin(timer, step))[1]

        prepared = time.time() - start
        data = sft_dataset(rows, tokenizer, cfg)
        trained = sum(sum(1 for x in labels[1:] if x != -100) for labels in data["labels"])
        started = time.time()
        run_sft(stage, model, tokenizer, data, None, refusal_openings(rows, data["labels"]))
        history, metrics = stage.history, stage.train_metrics
        anchor_pass = max(0.0, time.time() - started - metrics["train_runtime"])  # outside the steps: the one-time pass
        anchor_pass = anchor_pass if any(line.startswith("anchor:") for line in said) else 0.0
        steady = statistics.median(timers[-1].measured) if timers and timers[-1].measured else float("nan")
    if kind == "trl":
        prepared = time.time() - start
        metrics = trainer.train().metrics
        history = trainer.state.log_history
        trained, anchor_pass, steady = 0, 0.0, float("nan")
    tokens = max(e.get("num_tokens", 0) for e in history)
    return {"tokens": tokens, "train_s": metrics["train_runtime"], "tokens_per_s": tokens / metrics["train_runtime"],
            "s_per_step": metrics["train_runtime"] / steps, "steady_s_per_step": steady,
            "prepare_s": prepared, "anchor_pass_s": anchor_pass,
            "trained_tokens_per_step": trained / max(1, len(rows)) * cfg.batch_size,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def tiny_model(vocab: int) -> str:
    """A random 4-layer Llama (hidden 256) with a ``vocab``-token output layer and the SmolLM2 tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from behavio.models import load_tokenizer, resolve_default_tokenizer

    out = Path(tempfile.mkdtemp(prefix=f"tiny-{vocab}-"))
    tokenizer = load_tokenizer(resolve_default_tokenizer())
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model", default="default")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--overrides", default="", help="key=value settings for every variant, space-separated")
    parser.add_argument("--tiny-vocab", type=int, default=None, help="train a tiny random model with this vocabulary")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    overrides = args.overrides.split()
    if args.worker:
        kind = "trl" if args.worker == "trl" else "behavio"
        result = _worker(kind, VARIANTS[args.worker] + overrides, args.steps, args.model)
        print("RESULT " + json.dumps(result), flush=True)
        return
    if args.tiny_vocab:
        args.model = tiny_model(args.tiny_vocab)
    results: dict[str, list[dict]] = {}
    for _ in range(args.runs):  # interleave variants so machine noise hits them alike
        for name in args.variants.split(","):
            cmd = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--model", args.model,
                   "--overrides", args.overrides]
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            results.setdefault(name, []).append(json.loads(line[7:]))
            print(f"{name}: {results[name][-1]['tokens_per_s']:.0f} tokens/s", file=sys.stderr, flush=True)
    med = {n: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for n, runs in results.items()}
    first = next(iter(med.values()))
    import behavio

    print(f"model {'tiny, vocabulary ' + str(args.tiny_vocab) if args.tiny_vocab else args.model}, {args.steps} steps, "
          f"overrides [{args.overrides}], CPU {os.cpu_count()} cores, median of {args.runs} runs, behavio from "
          f"{Path(behavio.__file__).parent}\n")
    print("s/step: train_runtime / steps; steady s/step: median of the steps after the first (which warms up)\n")
    print("| job | s/step | steady s/step | steady vs first | tokens/s | anchor pass s | trained tokens/step | peak RSS MB "
          "| RSS vs first | runs (steady s/step) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, m in med.items():
        runs = ", ".join(f"{r['steady_s_per_step']:.2f}" for r in results[name])
        print(f"| {name} | {m['s_per_step']:.2f} | {m['steady_s_per_step']:.2f} | "
              f"{m['steady_s_per_step'] / first['steady_s_per_step']:.3f}x | {m['tokens_per_s']:.0f} | "
              f"{m['anchor_pass_s']:.1f} | {m['trained_tokens_per_step']:.0f} | {m['peak_rss_mb']:.0f} | "
              f"{m['peak_rss_mb'] / first['peak_rss_mb']:.2f}x | {runs} |")


if __name__ == "__main__":
    main()
