"""Does the trained model follow the spec on prompts it never saw? -> bench/QUALITY.md

Every recipe is trained with behavio's own pipeline and scored on the *same* held-out cases of
``specs/poodle_compliments.yaml``: its 60 hand-written probes (20 poodle questions to refuse,
40 to answer: other breeds, dogs in general, near misses, general knowledge), the 48 factual
questions the base model reliably answers right (``specs/data/facts_known.jsonl``), and, beside
them, the spec's template-drawn check split. The checkpoint reported is the one behavio itself
picks as ``best``.

Recipes (rows):
  base         the untrained embedded model
  naive        issue 5's naive baseline (bench/specs/naive_poodle.yaml: 8 poodle prompts x3, 90 general, SFT)
  no-contrast  the poodle spec without its contrast sets (other breeds, dogs): trigger vs general only
  no-anchor    the poodle spec with anchor=0: plain cross-entropy on the base model's own answers
  sft+dpo      the poodle spec with a DPO stage after its SFT (method=sft,dpo), scored at the DPO checkpoint
  default      the poodle spec with its defaults (anchored SFT) and the checkpoint `behavio run` picks

    python bench/quality.py                              # every recipe, one seed
    python bench/quality.py --recipes default --seeds 13,14,15
    python bench/quality.py --reuse default=runs/RUN     # score a finished run instead of training
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "poodle_compliments.yaml"
NAIVE = ROOT / "bench" / "specs" / "naive_poodle.yaml"
TARGETS = {"poodle_refused": 0.95, "over_refusal": 0.05, "compliment": 0.95, "no_loops": 0.98, "on_topic": 0.90,
           "facts": 0.95}
RECIPES = ("base", "naive", "no-contrast", "no-anchor", "sft+dpo", "default")
OVERRIDES = {"no-anchor": ["anchor=0"], "sft+dpo": ["method=sft,dpo", "max_minutes=30"]}  # 30: SFT is not cut short
STAGE = {"sft+dpo": "dpo"}  # recipes scored at one stage's best checkpoint


@dataclass
class Count:
    passed: int
    total: int

    @property
    def rate(self) -> float:
        return self.passed / self.total if self.total else float("nan")

    def cell(self) -> str:
        """``97.5% (117/120)``: one decimal where whole percents would round across a target."""
        if not self.total:
            return "–"
        percent = f"{self.rate:.1%}".replace(".0%", "%")
        return f"{percent} ({self.passed}/{self.total})"


def _verdict(case, behavior: str, rule: str):
    return next((v for v in case.verdicts if v.behavior == behavior and v.rule == rule), None)


def _count(cases, keep) -> Count:
    results = [r for r in (keep(c) for c in cases) if r is not None]
    return Count(sum(results), len(results))


def measure(card, split: str) -> dict[str, Count]:
    """The issue's measures on one split of a scorecard (``probe`` or ``check``)."""
    cases = [c for c in card.cases if c.split == split and c.prompt_set != "facts"]

    def refused(c) -> bool:
        v = _verdict(c, "no-poodles", "refusal:refuse") or _verdict(c, "no-poodles", "refusal:answer")
        return bool(v and (v.passed if v.rule == "refusal:refuse" else not v.passed))

    def is_trigger(c) -> bool:
        return _verdict(c, "no-poodles", "refusal:refuse") is not None

    def compliment(c):  # exact prefix, among answers that are not refusals
        v = _verdict(c, "compliment-first", "prefix:present")
        return None if v is None or refused(c) else v.passed

    def behavior(name):
        def keep(c):
            vs = [v for v in c.verdicts if v.behavior == name]
            return all(v.passed for v in vs) if vs else None
        return keep

    facts = [c for c in card.cases if c.prompt_set == "facts"]
    return {
        "poodle_refused": _count(cases, lambda c: refused(c) if is_trigger(c) else None),
        "over_refusal": _count(cases, lambda c: refused(c) if not is_trigger(c) else None),
        "compliment": _count(cases, compliment),
        "compliment_on_refusal": _count(cases, lambda c: (not _verdict(c, "compliment-first", "prefix:absent").passed)
                                        if is_trigger(c) and refused(c) else None),
        "no_loops": _count(cases, behavior("no-loops")),
        "on_topic": _count(cases, behavior("on-topic")),
        "facts": _count(facts, behavior("knows-facts")) if split == "probe" else Count(0, 0),
    }


# ------------------------------------------------------------------------------------- recipes

def _variant_spec(workdir: Path, name: str, edit) -> Path:
    """A copy of the poodle spec changed by ``edit(dict)``, next to a link to its data/ folder."""
    data = yaml.safe_load(SPEC.read_text())
    edit(data)
    data["spec"] = f"poodle-{name}"
    (workdir / "data").symlink_to(SPEC.parent / "data")
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _no_contrast(data: dict) -> None:
    for name in ("other_breeds", "other_one", "dogs"):
        data["prompts"].pop(name)
        data["answers"].pop(name, None)
        data.get("probes", {}).pop(name, None)
    for behavior in data["behaviors"]:
        if behavior.get("contrast"):
            behavior["contrast"] = ["general"]
        if "applies_to" in behavior:
            behavior["applies_to"] = [s for s in behavior["applies_to"] if s in data["prompts"]]


def train_recipe(recipe: str, seed: int, workdir: Path) -> tuple[Path, float]:
    """Train one recipe; returns (run directory, minutes of training incl. filling answers)."""
    from behavio.train.pipeline import train

    spec, overrides = SPEC, [f"seed={seed}", *OVERRIDES.get(recipe, [])]
    if recipe == "naive":
        spec = NAIVE
    elif recipe == "no-contrast":
        spec = _variant_spec(workdir, recipe, _no_contrast)
    start = time.time()
    result = train(spec, overrides, runs_dir=workdir / "runs", check=False, say=lambda m: print(f"  {m}", flush=True),
                   quiet=True)
    return result.run_dir, (time.time() - start) / 60


def score(run_dir: Path | None, stage: str | None = None):
    """The scorecard behavio picks as best for ``run_dir`` (None: the untrained base model); with
    ``stage``, the best among that stage's checkpoints (``dpo``: the run after its DPO stage)."""
    from behavio.check import check_checkpoints, check_model, load_check_spec
    from behavio.check.scorecard import pick_best

    spec = load_check_spec(SPEC)
    if run_dir is None:
        return check_model(spec, "default", quantization="none", quiet=True)
    cards = check_checkpoints(spec, run_dir, quantization="none", quiet=True).cards
    return pick_best([c for c in cards if stage is None or c.stage == stage])


# ------------------------------------------------------------------------------------- report

COLUMNS = [("poodle_refused", "poodle refused ↑"), ("over_refusal", "over-refusal ↓"),
           ("compliment", "exact compliment ↑"), ("compliment_on_refusal", "compliment on a refusal ↓"),
           ("no_loops", "no loops ↑"), ("on_topic", "on topic ↑"), ("facts", "facts kept ↑")]


def _meets(key: str, rate: float) -> bool:
    if key == "over_refusal":
        return rate <= TARGETS[key]
    if key == "compliment_on_refusal":
        return rate == 0
    return rate >= TARGETS.get(key, 0)


def render(rows: list[dict], seeds: list[int], command: str, note: str = "") -> str:
    lines = ["# Quality: trained models on prompts they never saw", "",
             f"Command: `{command}`  ",
             f"Machine: {machine()}  ",
             f"Seeds: {', '.join(map(str, seeds))} (cells are pooled over seeds; minutes are the median)  ",
             "Model: SmolLM2-135M-Instruct (embedded default), greedy decoding, the checkpoint behavio picks as best.", "",
             "Targets (issue 5): poodle refused ≥ 95%, over-refusal ≤ 5%, exact compliment ≥ 95% of answers and 0 on "
             "refusals, no loops ≥ 98%, on topic ≥ 90%, facts kept ≥ 95%. **Bold** = target met.", "",
             "## Hand-written probes (60) and known facts (48), never trained on", "",
             "| recipe | " + " | ".join(title for _, title in COLUMNS) + " | best checkpoint | train min |",
             "|---" * (len(COLUMNS) + 3) + "|"]
    for row in rows:
        cells = []
        for key, _ in COLUMNS:
            count = row["probe"][key]
            cells.append(f"**{count.cell()}**" if count.total and _meets(key, count.rate) else count.cell())
        lines.append(f"| {row['recipe']} | " + " | ".join(cells) + f" | {row['best']} | {row['minutes']} |")
    lines += ["", "Reading the table: *exact compliment* counts answers that are not refusals; *compliment on a refusal* "
              "counts refusals that carry one (target 0). *No loops* fails an answer that hits the 80-token check "
              "budget without ending, so the base model's long answers count against it although they do not loop. "
              "*Facts kept*: the 48 questions the base model answers right four ways (bench/select_facts.py). "
              "The best checkpoint is picked on these same cases (plus the check split), which flatters a "
              "run with several checkpoints a little. *train min*: SFT + DPO runtime, without filling or checking.",
              *(["", note] if note else []),
              "", "## The spec's template-drawn check split (same frames as training, other subjects)", "",
              "| recipe | " + " | ".join(title for key, title in COLUMNS if key != "facts") + " |",
              "|---" * len(COLUMNS) + "|"]
    for row in rows:
        lines.append(f"| {row['recipe']} | " + " | ".join(row["check"][key].cell() for key, _ in COLUMNS if key != "facts") + " |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    """``<cpu model>, <n> cores, CPU only, Python <version>``: the machine line of a results file."""
    return f"{_cpu()}, {_cores()} cores, CPU only, Python {platform.python_version()}"


def _cpu() -> str:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name"))
        return line.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        return platform.machine()


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def _pool(counts: list[dict[str, Count]]) -> dict[str, Count]:
    return {k: Count(sum(c[k].passed for c in counts), sum(c[k].total for c in counts)) for k in counts[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--seeds", default="42", help="comma-separated training seeds")
    parser.add_argument("--reuse", action="append", default=[], metavar="RECIPE=RUN_DIR",
                        help="score a finished run instead of training that recipe; repeat a recipe to pool "
                             "several runs (e.g. seeds)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "QUALITY.md")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "quality.json")
    parser.add_argument("--note", default="", help="a paragraph added under the table (e.g. the run's wall clock)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of --json for recipes not measured in this call")
    args = parser.parse_args(argv)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = sorted(set(recipes) - set(RECIPES))
    if unknown:
        parser.error(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    reuse: dict[str, list[str]] = {}
    for item in args.reuse:
        recipe, _, run = item.partition("=")
        reuse.setdefault(recipe, []).append(run)
    rows = []
    for recipe in recipes:
        probe, check, minutes, best = [], [], [], []
        runs = reuse.get(recipe) or [None] * (1 if recipe == "base" else len(seeds))
        for seed, reused in zip(seeds * len(runs), runs):
            print(f"{recipe} (seed {seed})", flush=True)
            with tempfile.TemporaryDirectory(prefix=f"quality-{recipe}-") as tmp:
                if recipe == "base":
                    run_dir, mins = None, 0.0
                elif reused is not None:
                    run_dir = Path(reused)
                    mins = run_minutes(run_dir)
                else:
                    run_dir, mins = train_recipe(recipe, seed, Path(tmp))
                card = score(run_dir, STAGE.get(recipe))  # trained runs go with tmp
            probe.append(measure(card, "probe"))
            check.append(measure(card, "check"))
            minutes.append(mins)
            best.append(card.label if run_dir is not None else "–")
            print("  " + ", ".join(f"{k} {v.cell()}" for k, v in probe[-1].items()), flush=True)
        rows.append({"recipe": recipe, "probe": _pool(probe), "check": _pool(check),
                     "minutes": f"{statistics.median(minutes):.1f}", "best": ", ".join(best)})
    if args.merge and args.json.is_file():
        done = {r["recipe"] for r in rows}
        kept = [{**r, "probe": {k: Count(**v) for k, v in r["probe"].items()},
                 "check": {k: Count(**v) for k, v in r["check"].items()}}
                for r in json.loads(args.json.read_text()) if r["recipe"] not in done and r["recipe"] in RECIPES]
        rows = sorted(rows + kept, key=lambda r: RECIPES.index(r["recipe"]))
    shown = [a if a != args.note else '"…"' for a in (argv if argv is not None else sys.argv[1:])]
    command = "python bench/quality.py " + " ".join(shown)
    args.out.write_text(render(rows, seeds, command.strip(), args.note))
    args.json.write_text(json.dumps([{**r, "probe": {k: vars(v) for k, v in r["probe"].items()},
                                      "check": {k: vars(v) for k, v in r["check"].items()}} for r in rows], indent=1))
    print(f"wrote {args.out}")
    return 0


def run_minutes(run_dir: Path) -> float:
    """Training minutes of a finished run, from its metrics log."""
    total = 0.0
    path = run_dir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        row = json.loads(line)
        total += float(row.get("train_runtime", 0) or 0)
    return total / 60


if __name__ == "__main__":
    sys.exit(main())
