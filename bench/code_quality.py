"""Does a model trained on specs/code_answers.yaml structure its answers? -> bench/CODE_QUALITY.md

The untrained base model and the run's best checkpoint (the one behavio picks) answer the spec's
held-out check cases (split ``check``; the spec has no probes). Each answer is measured with the
structure rule's own helpers:

  sections   the three section headers present, each a whole line, in order (target ≥ 90%)
  parses     there is a python block and every python block parses (``ast.parse``)
  docstrings there is a function, and every function in the blocks that parse has a docstring with
             the Args/Returns lines it needs (as the rule counts them: no Args for a function without
             parameters, no Returns for one that returns nothing)

beside the code-structure and no-loops pass rates of the scorecard. Parses and docstrings are reported only.

    python bench/code_quality.py                    # train the spec (SFT then DPO), then score
    python bench/code_quality.py --reuse runs/RUN   # score a finished `behavio run specs/code_answers.yaml`
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import machine, run_minutes  # noqa: E402

from behavio.check.scorecard import Rate  # noqa: E402
from behavio.kinds.structure import blocks_in, check_docstring, check_sections  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "code_answers.yaml"
_SPEC = yaml.safe_load(SPEC.read_text())
_STRUCTURE = next(b for b in _SPEC["behaviors"] if b["id"] == "code-structure")
SECTIONS: list[str] = _STRUCTURE["sections"]
DOCSTRING: list[str] = _STRUCTURE["code"]["docstring"]
TARGET = 0.90  # sections in order
MEASURES = [("sections", "sections in order"), ("parses", "python parses"), ("docstrings", "docstrings Args/Returns"),
            ("code-structure", "code-structure (scorecard)"), ("no-loops", "no-loops (scorecard)")]


def measure_response(text: str) -> dict[str, bool]:
    """The three structure measures of one answer."""
    blocks, trees = blocks_in(text, "python"), []
    for body in blocks:
        try:
            trees.append(ast.parse(body))
        except SyntaxError:
            pass
    functions = [f for t in trees for f in ast.walk(t) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return {"sections": all(r is None for r in check_sections(text, SECTIONS)),
            "parses": bool(blocks) and len(trees) == len(blocks),
            "docstrings": bool(functions) and all(check_docstring(f, DOCSTRING) is None for f in functions)}


def measure(card) -> list[dict]:
    """Per check case: the three measures and whether its code-structure / no-loops verdicts passed."""
    rows = []
    for case in (c for c in card.cases if c.split == "check"):
        behaviors = {b: all(v.passed for v in case.verdicts if v.behavior == b) and case.response is not None
                     for b in ("code-structure", "no-loops")}
        rows.append({"id": case.id, "prompt": case.prompt, **measure_response(case.response or ""), **behaviors})
    return rows


def totals(card, rows: list[dict]) -> dict[str, Rate]:
    """Each measure over all check cases; the two behaviors exactly as the scorecard counts them."""
    out = {key: Rate(sum(r[key] for r in rows), len(rows)) for key, _ in MEASURES[:3]}
    return out | {b: card.line(b, "check") for b in ("code-structure", "no-loops")}


def score(run_dir: Path | None):
    """(scorecard, base model name): the best checkpoint of ``run_dir``, or the untrained base model for None."""
    from behavio.check import check_checkpoints, check_model, load_check_spec
    from behavio.check.scorecard import pick_best
    from behavio.models import resolve_base_model

    spec = load_check_spec(SPEC)
    if run_dir is None:
        return check_model(spec, "default", quantization="none", quiet=True), Path(resolve_base_model("default")).name
    report = check_checkpoints(spec, run_dir, quantization="none", quiet=True)
    best = pick_best(report.cards)
    if best is None:
        raise SystemExit(f"{run_dir}: no sound checkpoint to score")
    return best, Path(report.base_model).name


def train_spec(workdir: Path) -> tuple[Path, float]:
    """Train the spec with its defaults; returns (run directory, wall-clock minutes)."""
    from behavio.train.pipeline import train

    start = time.time()
    result = train(SPEC, [], runs_dir=workdir, check=False, quiet=True)
    return result.run_dir, (time.time() - start) / 60


# ------------------------------------------------------------------------------------- report

def summarize(base_card, card, *, model: str, minutes: float, source: str, command: str) -> dict:
    """Everything CODE_QUALITY.md and code_quality.json show, from the base and the trained scorecard."""
    base_rows, rows = measure(base_card), measure(card)
    assert [r["id"] for r in base_rows] == [r["id"] for r in rows]
    example = next(c for c in card.cases if c.split == "check")
    return {
        "command": command, "machine": machine(),
        "model": model, "max_new_tokens": int(_SPEC["check"]["max_new_tokens"]),
        "best": card.label, "train_minutes": round(minutes, 2), "minutes_from": source,
        "totals": {name: {k: {"passed": r.passed, "total": r.total} for k, r in totals(c, rs).items()}
                   for name, c, rs in (("base", base_card, base_rows), ("trained", card, rows))},
        "cases": [{"id": b["id"], "prompt": b["prompt"], "base": {k: b[k] for k, _ in MEASURES},
                   "trained": {k: t[k] for k, _ in MEASURES}} for b, t in zip(base_rows, rows)],
        "example": {"id": example.id, "prompt": example.prompt, "response": example.response or ""},
    }


def _cell(rate: Rate) -> str:
    return f"{rate.passed}/{rate.total} ({rate.rate:.0%})" if rate.total else "–"


def _fenced(text: str) -> str:
    """``text`` in a fence longer than any backtick run inside it."""
    run, width = 0, 3
    for ch in text:
        run = run + 1 if ch == "`" else 0
        width = max(width, run + 1)
    return "`" * width + "\n" + text + "\n" + "`" * width


def render(result: dict) -> str:
    base, trained = result["totals"]["base"], result["totals"]["trained"]
    lines = ["# Code quality: structured, documented Python answers on prompts never trained on", "",
             f"Command: `{result['command']}`"
             + (" (the run: `behavio run specs/code_answers.yaml` with the spec's own train settings)  "
                if "--reuse" in result["command"] else "  "),
             f"Machine: {result['machine']}  ",
             f"Model: {result['model']}, greedy decoding, {result['max_new_tokens']} new tokens; "
             f"{len(result['cases'])} held-out check cases of specs/code_answers.yaml.  ",
             f"Best checkpoint: {result['best']}; "
             f"training: {result['train_minutes']:.1f} min ({result['minutes_from']}).",
             "", f"Target (issue): sections present and in order ≥ {TARGET:.0%} (**bold** = met); "
             "parses and docstrings are reported only.", "",
             "| model | " + " | ".join(title for _, title in MEASURES) + " |", "|---" * (len(MEASURES) + 1) + "|"]
    for name, row in (("base", base), (f"trained ({result['best']})", trained)):
        cells = [_cell(Rate(**row[key])) for key, _ in MEASURES]
        if row["sections"]["total"] and row["sections"]["passed"] / row["sections"]["total"] >= TARGET:
            cells[0] = f"**{cells[0]}**"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "*sections*: the structure rule's section check. *parses*: at least one python block, all parse. "
              "*docstrings*: at least one function, each with the Args/Returns lines the rule requires of it. "
              "*code-structure* needs all three; *no-loops* also fails an answer that runs into the token budget.",
              "", "## Per case (base → trained, ✓ pass, ✗ fail)", "",
              "| case | prompt | " + " | ".join(key for key, _ in MEASURES) + " |", "|---" * (len(MEASURES) + 2) + "|"]
    mark = {True: "✓", False: "✗"}
    for case in result["cases"]:
        cells = [f"{mark[case['base'][key]]} → {mark[case['trained'][key]]}" for key, _ in MEASURES]
        lines.append(f"| {case['id']} | {case['prompt']} | " + " | ".join(cells) + " |")
    example = result["example"]
    lines += ["", f"## Example: the trained model's answer to {example['id']}", "", f"> {example['prompt']}", "",
              _fenced(example["response"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reuse", type=Path, metavar="RUN_DIR", help="score this finished run instead of training")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "CODE_QUALITY.md")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "code_quality.json")
    args = parser.parse_args(argv)
    print("base model", flush=True)
    base_card, model = score(None)
    with tempfile.TemporaryDirectory(prefix="code-quality-") as tmp:
        if args.reuse:
            run_dir, minutes, source = args.reuse, run_minutes(args.reuse), "the run's metrics.jsonl train_runtime"
        else:
            print("training", flush=True)
            run_dir, minutes, source = *train_spec(Path(tmp)), "wall clock of behavio's train()"
        print(f"scoring {run_dir}", flush=True)
        card, run_model = score(run_dir)  # a trained run goes with tmp
    model = model if run_model == model else f"{model} (the run trained {run_model})"
    command = " ".join(["python bench/code_quality.py", *(argv if argv is not None else sys.argv[1:])])
    result = summarize(base_card, card, model=model, minutes=minutes, source=source, command=command)
    for name in ("base", "trained"):
        cells = (f"{k} {_cell(Rate(**v))}" for k, v in result["totals"][name].items())
        print(f"  {name}: " + ", ".join(cells), flush=True)
    args.out.write_text(render(result))
    args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(f"wrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
