"""python bench/compile_bench.py [--rows 50000] [--runs 3] — compile a generated 50,000-row spec.

Each run is a fresh `python -m behavio compile` process; we report wall time and peak RSS
(ru_maxrss of the child), the median of the runs, and update the "## compile" section of
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC = """\
spec: bench
system: "You are terse."
vars:
  forms: {forms}
  topics: {topics}
prompts:
  general:
    template: "{{{{ form }}}}"
    each: {{form: "{{{{ forms }}}}", topic: "{{{{ topics }}}}"}}
  secret:
    list: {secrets}
answers:
  general: {{source: literal, template: "About {{{{ row.topic }}}}: it is interesting."}}
behaviors:
  - id: no-secret
    kind: refusal
    when: secret
    responses: ["I can't share that."]
    contrast: general
  - id: hello
    kind: prefix
    choices: ["Good question.", "Nice one."]
  - id: no-loops
    kind: no_repetition
  - id: on-topic
    kind: on_topic
split: {{seed: 1, val: 0.1, check: 0.1, min_share: 0.0}}
"""


def make_spec(rows: int, folder: Path) -> Path:
    n_forms = 250
    n_topics = rows // n_forms
    forms = [f"Question {i} about {{{{ topic }}}}?" for i in range(n_forms)]
    topics = [f"topic number {i}" for i in range(n_topics)]
    secrets = [f"What is secret {i}?" for i in range(50)]
    path = folder / "bench.yaml"
    path.write_text(SPEC.format(forms=json.dumps(forms), topics=json.dumps(topics), secrets=json.dumps(secrets)), encoding="utf-8")
    return path


def run_once(spec: Path, out: Path) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "behavio", "compile", str(spec), "--out", str(out), "-q"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, peak_mb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = make_spec(args.rows, Path(tmp))
        results = []
        for i in range(args.runs):
            out = Path(tmp) / f"out{i}"
            results.append(run_once(spec, out))
            print(f"run {i + 1}: {results[-1][0]:.2f} s, peak {results[-1][1]:.0f} MB", flush=True)
        counts = (out / "bench" / "manifest.json").read_text()
    c = json.loads(counts)["counts"]
    wall = statistics.median(r[0] for r in results)
    peak = max(r[1] for r in results)
    section = (
        "## compile\n\n"
        f"Command: `python bench/compile_bench.py --rows {args.rows} --runs {args.runs}`  \n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}  \n"
        f"Spec: {args.rows} prompts expanded from a cartesian `each` + 50 refusal prompts, 4 behaviors; "
        f"output {c['sft']} SFT + {c['sft_val']} val rows, {c['dpo']} DPO pairs, {c['checks']} check cases.\n\n"
        "| metric | median of runs | target | ratio to target |\n|---|---|---|---|\n"
        f"| wall time (fresh process, incl. imports) | {wall:.2f} s | < 10 s | {wall / 10:.2f}× |\n"
        f"| peak RSS (max over runs) | {peak:.0f} MB | < 1024 MB | {peak / 1024:.2f}× |\n\n"
        f"Runs: {', '.join(f'{w:.2f} s' for w, _ in results)}.\n"
    )
    print(section)
    if not args.no_write:
        write_section(HERE / "RESULTS.md", "compile", section)


def write_section(path: Path, name: str, section: str) -> None:
    """Replace (or append) the `## name` section of a results file."""
    text = path.read_text("utf-8") if path.exists() else "# Benchmark results\n\n"
    lines, out, skipping = text.splitlines(keepends=True), [], False
    for line in lines:
        if line.startswith("## "):
            skipping = line.strip() == f"## {name}"
            if skipping:
                continue
        if not skipping:
            out.append(line)
    body = "".join(out).rstrip("\n") + "\n\n" + section
    path.write_text(body, encoding="utf-8")


if __name__ == "__main__":
    main()
