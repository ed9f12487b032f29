"""Does a spec nobody tuned work on prompts phrased unlike its training data? -> bench/SPEC_QUALITY.md

For each finished run of a spec (``behavio run SPEC`` with the defaults), reads the scorecard of the
checkpoint behavio picked and reports, per scorecard line: the check split (held-out phrasings of the
spec's own templates), the subject split (prompts about subjects held out of training), the paraphrase
split, the spec's dev probes (hand-written, committed before any
training), and -- once, at the end -- the sealed final exam (``bench/sealed/<spec>.yaml``: other
hand-written prompts, never looked at while tuning), plus facts kept against the untrained base model
(same system message, same cases) and the gap between the generated held-out cases (check and subject
pooled: what a spec without probes is judged on, paraphrases aside) and the probes.

    python bench/spec_quality.py specs/acme_support.yaml --run /work/exp/runs-acme1/acme-support-...
    python bench/spec_quality.py specs/acme_support.yaml --run RUN --sealed     # the final exam, once
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from behavio.check import check_model, load_check_spec  # noqa: E402
from behavio.check.scorecard import Rate, pooled  # noqa: E402
from quality import machine  # noqa: E402  (bench/quality.py: the machine line of every results file)

SEALED = ROOT / "bench" / "sealed"


def best_card(run: Path) -> dict:
    data = json.loads((run / "scorecard.json").read_text())
    return next(c for c in data["checkpoints"] if c["label"] == data["best"])


def rate(entry: dict, split: str) -> Rate:
    part = entry.get(split) or {"passed": 0, "total": 0}  # a scorecard from before the split existed has none
    return Rate(part["passed"], part["total"])


def cell(r: Rate) -> str:
    return "–" if not r.total else f"{r.rate:.1%} ({r.passed}/{r.total})".replace(".0%", "%")


def sealed_spec(spec_path: Path) -> Path:
    """A copy of the spec whose probes are the sealed final exam instead of the dev probes."""
    data = yaml.safe_load(spec_path.read_text())
    sealed = SEALED / spec_path.name
    mapping = {name: entry.get("key", name) for name, entry in data["probes"].items()}
    data["probes"] = {name: {"file": str(sealed), "key": key} for name, key in mapping.items()}
    out = Path(tempfile.mkdtemp()) / spec_path.name
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    for folder in ("data", "probes"):  # the spec's relative files
        (out.parent / folder).symlink_to(spec_path.parent / folder)
    return out


def base_cases(spec):
    """The cases the base model is compared on: the probes, and the facts (every split)."""
    keep = [c for c in spec.cases if c.split == "probe" or any(r.behavior.startswith("knows-facts") for r in c.rules)]
    return dataclasses.replace(spec, cases=keep)


def probe_lines(card) -> dict[str, Rate]:
    return {line: card.line(line, "probe") for line in card.lines if card.line(line, "probe").total}


def report(spec_path: Path, runs: list[Path], sealed: bool) -> str:
    spec = load_check_spec(spec_path)
    base = check_model(base_cases(spec), "default", quiet=True)
    lines = [f"## {spec.id}", "", f"`python bench/spec_quality.py {spec_path.relative_to(ROOT)} "
             + " ".join(f"--run {r}" for r in runs) + (" --sealed" if sealed else "") + f"`; {machine()}.", ""]
    for run in runs:
        best = best_card(run)
        lines += [f"Run `{run.name}` (best: {best['label']}, step {best['step']}):", "",
                  "| line | check | subject | paraphrase | probe | gap (check+subject)−probe | base (probe) |",
                  "|---|---|---|---|---|---|---|"]
        for name, entry in best["lines"].items():
            check, subject, probe = rate(entry, "check"), rate(entry, "subject"), rate(entry, "probe")
            generated = pooled([check, subject])
            gap = f"{(generated.rate - probe.rate) * 100:+.1f}" if generated.total and probe.total else "–"
            lines.append(f"| {name} | {cell(check)} | {cell(subject)} | {cell(rate(entry, 'paraphrase'))} | {cell(probe)} | "
                         f"{gap} | {cell(base.line(name, 'probe'))} |")
        facts = next((n for n in best["lines"] if n.startswith("knows-facts")), None)
        if facts:
            kept, had = rate(best["lines"][facts], "check"), base.line(facts, "check")
            lines += ["", f"Facts kept: {cell(kept)} against the base model's {cell(had)} "
                      f"({kept.passed / max(had.passed, 1):.1%} of the base model's)."]
        if sealed:
            exam = load_check_spec(sealed_spec(spec_path))
            adapter = Path(best["path"])
            exam_card = check_model(exam, str(adapter), quiet=True)  # folds the system message like its run
            exam_base = check_model(base_cases(exam), "default", quiet=True)
            lines += ["", "Sealed final exam (bench/sealed/, scored once):", "", "| line | trained | base |", "|---|---|---|"]
            for name, r in probe_lines(exam_card).items():
                lines.append(f"| {name} | {cell(r)} | {cell(exam_base.line(name, 'probe'))} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--run", type=Path, action="append", required=True, help="a finished run directory")
    parser.add_argument("--sealed", action="store_true", help="also score the sealed final exam (once!)")
    args = parser.parse_args()
    print(report(args.spec.resolve(), args.run, args.sealed))


if __name__ == "__main__":
    main()
