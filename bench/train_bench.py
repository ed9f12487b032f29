# python bench/train_bench.py --runs 3 --steps 20        (SmolLM2-135M on CPU; writes nothing, prints a table)
"""Training throughput: behavio's SFT stage vs a plain TRL SFTTrainer script on the same job.

Same model (the embedded SmolLM2-135M-Instruct unless --model), same SFT rows (the poodle spec,
answers filled from the cache), batch size, LoRA settings, steps and seed. Each job runs in a fresh
process; we report tokens/s (TRL's ``num_tokens`` over the trainer's ``train_runtime``) and peak RSS,
the median of ``--runs``, and behavio/TRL ratios. Variants: behavio with padding_free and packing.

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
SPEC = ROOT / "specs" / "poodle_compliments.yaml"
VARIANTS = {"trl": [], "behavio": [], "behavio padding_free": ["padding_free=true"], "behavio packing": ["packing=true"]}


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
    answers = fill_pending(pending, str(resolve_base_model(cfg.base_model)), quiet=True, **run_fill_settings(cfg))
    return fill_rows(rows, answers)


def _worker(kind: str, overrides: list[str], steps: int, model: str) -> dict:
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from behavio.models import load_tokenizer, resolve_base_model
    from behavio.train.config import resolve_config
    from behavio.train.data import sft_dataset
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
        stage = Stage("sft", run_dir=out, cfg=cfg, spec_hash="bench", base_model=str(path), cuda=False,
                      metrics=MetricsLog(out, tensorboard=False), say=lambda _: None)
        from behavio.train.sft import run_sft

        prepared = time.time() - start
        run_sft(stage, model, tokenizer, sft_dataset(rows, tokenizer, cfg), None)
        history, metrics = stage.history, stage.train_metrics
    if kind == "trl":
        prepared = time.time() - start
        metrics = trainer.train().metrics
        history = trainer.state.log_history
    tokens = max(e.get("num_tokens", 0) for e in history)
    return {"tokens": tokens, "train_s": metrics["train_runtime"], "tokens_per_s": tokens / metrics["train_runtime"],
            "s_per_step": metrics["train_runtime"] / steps, "prepare_s": prepared,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model", default="default")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind = "trl" if args.worker == "trl" else "behavio"
        print("RESULT " + json.dumps(_worker(kind, VARIANTS[args.worker], args.steps, args.model)), flush=True)
        return
    results: dict[str, list[dict]] = {}
    for _ in range(args.runs):  # interleave variants so machine noise hits them alike
        for name in args.variants.split(","):
            cmd = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--model", args.model]
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            results.setdefault(name, []).append(json.loads(line[7:]))
            print(f"{name}: {results[name][-1]['tokens_per_s']:.0f} tokens/s", file=sys.stderr, flush=True)
    med = {n: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for n, runs in results.items()}
    trl = med.get("trl")
    print(f"model {args.model}, {args.steps} steps, batch 8, LoRA r16 all-linear, CPU {os.cpu_count()} cores, "
          f"median of {args.runs} runs\n")
    print("| job | tokens/s | s/step | peak RSS MB | tokens/s vs TRL | RSS vs TRL | runs (tokens/s) |")
    print("|---|---|---|---|---|---|---|")
    for name, m in med.items():
        ratio = f"{m['tokens_per_s'] / trl['tokens_per_s']:.2f}x" if trl else "-"
        mem = f"{m['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x" if trl else "-"
        runs = ", ".join(f"{r['tokens_per_s']:.0f}" for r in results[name])
        print(f"| {name} | {m['tokens_per_s']:.0f} | {m['s_per_step']:.2f} | {m['peak_rss_mb']:.0f} | {ratio} | {mem} | {runs} |")


if __name__ == "__main__":
    main()
