# python bench/step_bench.py [--compare allocator|precision|repetition] [--spec specs/poodle_compliments.yaml] [--steps 24] [--repeats 3]
"""What a setting buys an SFT step: ``behavio train`` with a baseline and with behavio's choice, alternating.

``--compare allocator`` (the default): glibc's default allocator (``BEHAVIO_KEEP_FREED_MEMORY=0``: every large
freed block goes back to the kernel and the next one faults in page by page) against behavio's setting
(behavio/process_settings.py). ``--compare precision``: ``cpu_precision=fp32`` against ``cpu_precision=bf16``
(bf16 autocast; what ``auto`` picks on a CPU with AVX512-BF16 or AMX). ``--compare repetition``:
``repetition_unlikelihood`` 0 against 1 (the token-level term against repeating).

Each run is ``behavio train SPEC method=sft max_steps=N`` (no check, no saved checkpoints but the last) in a fresh
process; the two variants alternate so machine noise hits both alike. Reported: s/step from the run's own summary
line, and the minor page faults and system CPU seconds of the whole process.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import machine  # noqa: E402  (bench/quality.py: the machine line of every results file)

ROOT = Path(__file__).resolve().parents[1]
COMPARISONS = {  # name -> {variant: (environment, overrides)}, the baseline first
    "allocator": {"glibc default (BEHAVIO_KEEP_FREED_MEMORY=0)": ({"BEHAVIO_KEEP_FREED_MEMORY": "0"}, []),
                  "behavio (freed memory kept)": ({"BEHAVIO_KEEP_FREED_MEMORY": "1"}, [])},
    "precision": {"fp32 (cpu_precision=fp32)": ({}, ["cpu_precision=fp32"]),
                  "bf16 autocast (cpu_precision=bf16)": ({}, ["cpu_precision=bf16"])},
    "repetition": {"without the term (repetition_unlikelihood=0)": ({}, ["repetition_unlikelihood=0"]),
                   "with it (repetition_unlikelihood=1)": ({}, ["repetition_unlikelihood=1"])},
}


def one_run(spec: str, steps: int, env: dict, overrides: list[str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as runs:
        out = subprocess.run([sys.executable, "-m", "behavio", "train", spec, "method=sft", f"max_steps={steps}",
                              f"save_steps={steps}", "max_minutes=null", "eval_max_rows=0", "--no-check",
                              "--runs-dir", runs, *overrides], env={**os.environ, **env},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True,
                             cwd=ROOT).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    per_step = re.search(rf"sft: {steps}/{steps} steps, \d+s \(([\d.]+) s/step\)", out)
    if not per_step:
        raise SystemExit(f"no 'sft: {steps}/{steps} steps' summary in the run's output:\n{out[-2000:]}")
    return {"s_per_step": float(per_step.group(1)), "faults": after.ru_minflt - before.ru_minflt,
            "system_s": after.ru_stime - before.ru_stime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="allocator")
    parser.add_argument("--spec", default="specs/poodle_compliments.yaml")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    variants = COMPARISONS[args.compare]
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, (env, overrides) in variants.items():
            results[name].append(one_run(args.spec, args.steps, env, overrides))
            print(name, results[name][-1], flush=True)
    print(f"\n{machine()}; {args.spec}, {args.steps} SFT steps per run, {args.repeats} runs each")
    print(f"| {args.compare} | s/step (median) | runs | page faults (median) | system s (median) |\n|---|---|---|---|---|")
    medians = {}
    for name, runs in results.items():
        medians[name] = statistics.median(r["s_per_step"] for r in runs)
        each = ", ".join(f"{r['s_per_step']:.2f}" for r in runs)
        print(f"| {name} | {medians[name]:.2f} | {each} | "
              f"{statistics.median(r['faults'] for r in runs) / 1e6:.2f} M | "
              f"{statistics.median(r['system_s'] for r in runs):.0f} |")
    base, ours = medians.values()
    print(f"speed-up per step: {base / ours:.2f}x")


if __name__ == "__main__":
    main()
