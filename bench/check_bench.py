# python bench/check_bench.py [--runs 3] [--naive-runs 1] [--threads 1] [--checkpoints 4] [--cases 60] [--max-new-tokens 48] [--write bench/RESULTS.md]
"""Benchmark `behavio check --all-checkpoints` against the naive loop users write today.

Setup: the embedded default base model (SmolLM2-135M-Instruct), N LoRA checkpoints (random small
perturbations of a fresh adapter, saved with PEFT as safetensors), the first M check cases of
specs/poodle_compliments.yaml, greedy decoding with T new tokens.

- behavio: ``check_checkpoints`` with an empty answer cache (base loaded once, every checkpoint's
  adapter loaded beside it, unmerged, and every checkpoint's rows in the same batches, each LoRA layer
  applying an adapter to its own range of rows (behavio/lora_slices.py); rows leaving the batch when they stop, the shared prompt prefix computed once, the
  rest of the prompts in passes of similar length, the output layer applied a vocabulary slice at a time;
  behavio/check/generation.py, behavio/decode.py); then the same call again on the unchanged run (cached re-run).
- naive: for every checkpoint reload the base and the adapter, then generate one prompt at a time.

behavio runs ``--runs`` times, then the naive loop ``--naive-runs`` times (it is slow); the median wall
time is reported, with the ratio and how many answers agree exactly between the two.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from behavio.check import check_checkpoints, load_check_spec  # noqa: E402
from behavio.models import load_model, load_tokenizer, resolve_base_model  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from quality import machine  # noqa: E402  (bench/quality.py: the machine line of every results file)

SPEC = ROOT / "specs" / "poodle_compliments.yaml"


def make_checkpoints(base_dir: Path, run: Path, n: int) -> None:
    """``n`` LoRA checkpoints on q/k/v/o with small random weights, as a training run would leave them."""
    from peft import LoraConfig, get_peft_model

    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"base_model": str(base_dir)}))
    model = get_peft_model(load_model(base_dir, quantization="none"),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    for i in range(n):
        step = (i + 1) * 25
        torch.manual_seed(step)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn_like(p) * 0.002)
        out = run / f"checkpoint-{step}"
        model.save_pretrained(out, safe_serialization=True)
        (out / "behavio.json").write_text(json.dumps({"spec_hash": "", "step": step, "stage": "sft", "metrics": {},
                                                      "complete": True, "base_model": str(base_dir)}))


def naive(base_dir: Path, run: Path, cases: list, max_new_tokens: int) -> tuple[float, dict]:
    """Reload base + adapter per checkpoint; one prompt at a time."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    answers = {}
    for ckpt in sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        t_ckpt = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), ckpt).eval()
        for case in cases:
            ids = tokenizer.apply_chat_template(case.messages, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)
            with torch.inference_mode():
                out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
            text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
            answers[(ckpt.name, case.id)] = text
        print(f"  naive {ckpt.name}: {time.perf_counter() - t_ckpt:.1f}s", flush=True)
    return time.perf_counter() - start, answers


def behavio_run(spec, run: Path, cache: Path, max_new_tokens: int, batch_size: int | None,
                stats=None) -> tuple[float, object]:
    import behavio.check.engine as engine
    from behavio import embeddings

    embeddings._cache.clear()  # score from scratch every time, like a new process would
    os.environ["BEHAVIO_CACHE"] = str(cache)
    answer = engine.answer
    if stats is not None:  # count what decoding did (forward passes, drafted and accepted tokens)
        engine.answer = lambda *a, **k: answer(*a, **{**k, "stats": stats})
    try:
        start = time.perf_counter()
        report = check_checkpoints(spec, run, max_new_tokens=max_new_tokens, batch_size=batch_size, quiet=True)
        return time.perf_counter() - start, report
    finally:
        engine.answer = answer


def fresh_process_rerun(run: Path, cache: Path, args) -> float:
    """Wall time of a cached re-run in a new process (interpreter, imports, compile, scoring: the user's view)."""
    import subprocess

    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--rerun", str(run), "--cases", str(args.cases),
                    "--max-new-tokens", str(args.max_new_tokens),
                    *(["--threads", str(args.threads)] if args.threads else [])], env={**os.environ, "BEHAVIO_CACHE": str(cache)},
                   check=True, capture_output=True)
    return time.perf_counter() - start


def pick_cases(cases: list[dict], n: int) -> list[dict]:
    """``n`` cases spread evenly over the spec's check cases (every prompt set represented)."""
    if n >= len(cases):
        return cases
    return [cases[round(i * (len(cases) - 1) / (n - 1))] for i in range(n)]


def write_section(path: Path, text: str) -> None:
    """Add or replace the ``## check`` section of RESULTS.md, leaving other sections alone."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(r"^## check\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--naive-runs", type=int, default=None, help="runs of the naive loop (default: --runs; it is slow)")
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=None, help="prompts per batch (default: the spec's)")
    parser.add_argument("--write", type=Path, default=None, help="Markdown file to add the '## check' section to")
    parser.add_argument("--rerun", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = load_check_spec(SPEC)
    spec = dataclasses.replace(spec, cases=pick_cases(spec.cases, args.cases))
    if args.rerun:
        report = check_checkpoints(spec, args.rerun, max_new_tokens=args.max_new_tokens, quiet=True)
        sys.exit(0 if report.generated == 0 else 3)
    base_dir = resolve_base_model("default")
    work = Path(tempfile.mkdtemp(prefix="behavio-check-bench-"))
    run = work / "run"
    make_checkpoints(base_dir, run, args.checkpoints)
    load_tokenizer(base_dir)
    # warm-up (not timed): one-time imports, the embedding model, torch kernels, the OS file cache
    behavio_run(dataclasses.replace(spec, cases=spec.cases[:2]), run, work / "cache-warmup", 4, args.batch_size)
    naive(base_dir, run, spec.cases[:1], 4)

    naive_runs = args.runs if args.naive_runs is None else min(args.naive_runs, args.runs)
    from behavio.decode import DecodeStats

    fast, cached, slow, agree = [], [], [], []
    reports, stats = [], DecodeStats()
    for i in range(args.runs):
        t_fast, report = behavio_run(spec, run, work / f"cache-{i}", args.max_new_tokens, args.batch_size,
                                     stats if i == 0 else None)
        t_cached, again = behavio_run(spec, run, work / f"cache-{i}", args.max_new_tokens, args.batch_size)
        assert again.generated == 0, "the cached re-run generated answers"
        fast.append(t_fast), cached.append(t_cached), reports.append(report)
        print(f"run {i + 1}: behavio {t_fast:.1f}s, cached {t_cached:.2f}s", flush=True)
    for i in range(naive_runs):
        t_slow, answers = naive(base_dir, run, spec.cases, args.max_new_tokens)
        ours = {(card.label, c.id): c.response for card in reports[i].cards for c in card.cases}
        same = sum(ours[k] == v for k, v in answers.items())
        slow.append(t_slow), agree.append(same / len(answers))
        print(f"run {i + 1}: naive {t_slow:.1f}s, identical answers {same}/{len(answers)}", flush=True)

    cli = fresh_process_rerun(run, work / f"cache-{args.runs - 1}", args)
    m_fast, m_cached = statistics.median(fast), statistics.median(cached)
    m_slow = statistics.median(slow) if slow else float("nan")
    n_answers = args.checkpoints * len(spec.cases)
    batch = args.batch_size or spec.batch_size
    same = f"{statistics.median(agree):.1%}" if agree else "not compared"
    text = (
        "## check\n\n"
        f"`python bench/check_bench.py --runs {args.runs} --naive-runs {naive_runs}"
        f"{f' --threads {args.threads}' if args.threads else ''}` — {args.checkpoints} LoRA checkpoints × {len(spec.cases)} check "
        f"cases × {args.max_new_tokens} new tokens, greedy, on the embedded default model (SmolLM2-135M-Instruct, fp32), "
        f"{machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}. "
        f"Median of {args.runs} runs ({naive_runs} of the naive loop), all in one process; "
        "times include loading the base model and adapters and scoring.\n\n"
        "| | median wall time | per answer | runs |\n|---|---|---|---|\n"
        f"| naive loop (reload base + adapter per checkpoint, one prompt at a time) | {m_slow:.1f} s | "
        f"{m_slow / n_answers:.2f} s | {', '.join(f'{t:.1f}' for t in slow)} |\n"
        f"| behavio (one base, every checkpoint's rows in the same batches: {batch} prompts × {args.checkpoints} "
        f"checkpoints per batch, each adapter on its own row range) | {m_fast:.1f} s | "
        f"{m_fast / n_answers:.2f} s | {', '.join(f'{t:.1f}' for t in fast)} |\n"
        f"| behavio, cached re-run (unchanged run) | {m_cached:.2f} s | – | {', '.join(f'{t:.2f}' for t in cached)} |\n"
        f"| cached re-run in a new process (interpreter start, imports, compile, scoring) | {cli:.1f} s | – | 1 |\n\n"
        f"Speed-up: **{m_slow / m_fast:.1f}×** over the naive loop (target ≥ 10×). Cached re-run: "
        f"**{m_cached / m_fast:.1%}** of the first run (target < 5%); it generates nothing and loads no model. "
        f"Answers identical between the two: {same} "
        "(greedy both ways; batched float32 matmuls can flip a near-tie token).\n"
        f"Decoding (first run): {stats.forwards} forward passes, {stats.positions} positions fed, "
        f"{stats.generated} tokens generated, {stats.drafted} drafted tokens checked (drafts come only from answers "
        "already cached for another checkpoint; this run's cache starts empty).\n"
        f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.\n"
    )
    print(text)
    if args.write:
        write_section(args.write, text)


if __name__ == "__main__":
    main()
