"""End to end on the embedded SmolLM2 (CPU; on the 2-core CI kind's slower AMD EPYC 5 min 52 s with warm caches, 6 min
28 s cold in a clean-clone CI run): `behavio run` on the poodle spec with
reduced steps and generation budgets, producing a scorecard and a best checkpoint -- and a model
that, on the spec's hand-written probes it never saw, refuses poodle questions and compliments the
others far more often than the base model, without refusing the others."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "poodle_compliments.yaml"
CHECK_TOKENS = 32
REDUCED = ["max_steps=STEPS", "eval_max_rows=8", "save_steps=HALF", "fill_max_new_tokens=24", "lr=LR",
           "max_minutes=null", "batch_size=4", "strengths=[]"]
SFT_STEPS, LR = 60, "1.2e-3"


def _rule(card: dict, line: str, rule: str, split: str = "probe") -> float:
    entry = next(r for r in card["rules"] if r["line"] == line and r["rule"] == rule)
    return entry[split]["rate"]


@pytest.mark.e2e
def test_behavio_run_on_the_poodle_spec_with_the_default_model(tmp_path, monkeypatch):
    from behavio.errors import BehavioError
    from behavio.models import default_gguf_path

    try:
        default_gguf_path()
    except BehavioError as exc:
        pytest.skip(str(exc))
    spec = tmp_path / "poodle_compliments.yaml"  # the shipped spec, with a shorter check answer budget
    text = re.sub(r"^check: .*$", f"check: {{max_new_tokens: {CHECK_TOKENS}}}", SPEC.read_text(), flags=re.M)
    spec.write_text(text)
    (tmp_path / "data").symlink_to(SPEC.parent / "data")
    overrides = [o.replace("STEPS", str(SFT_STEPS)).replace("HALF", str(SFT_STEPS // 2)).replace("LR", LR)
                 for o in REDUCED]
    cmd = [sys.executable, "-m", "behavio", "run", str(spec), *overrides, "--runs-dir", str(tmp_path / "runs"),
           "--out", str(tmp_path / "generated")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode in (0, 1), done.stderr[-4000:]  # 1: ran fine, the best is below a threshold
    (run,) = (tmp_path / "runs").iterdir()
    scorecard = json.loads((run / "scorecard.json").read_text())
    assert [c["checkpoint"] for c in scorecard["checkpoints"]] == [f"checkpoint-{SFT_STEPS // 2}",
                                                                   f"checkpoint-{SFT_STEPS}"]
    assert (run / "best").read_text().strip() == scorecard["best"]
    assert (tmp_path / "generated" / "poodle-compliments" / "manifest.json").is_file()
    assert f"sft: {SFT_STEPS}/{SFT_STEPS} steps" in done.stderr and "dpo:" not in done.stderr  # the spec: SFT only
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("anchor_kl" in e for e in events if e["stage"] == "sft")  # the spec's anchored SFT

    # The best checkpoint on the 60 hand-written probes (20 poodle questions, 40 that must be answered). The base
    # model scores 0 on both behaviors there (it never writes the fixed refusal or compliment; measured, and
    # tests/test_check_e2e.py checks the compliment on the base model), so these floors are gains over it.
    best = next(c for c in scorecard["checkpoints"] if c["checkpoint"] == scorecard["best"])
    report = {name: round(_rule(best, *key), 2) for name, key in
              {"refused": ("no-poodles", "refusal:refuse"), "compliment": ("compliment-first", "prefix:present")}.items()}
    report["over_refusal"] = best["over_refusal"]["probe"]["rate"]
    print("trained, on probes:", report)
    # measured (AMD EPYC Zen 3, 60 steps of 4 rows at lr 1.2e-3): refused 1.0, compliment 0.97, over-refusal 0.025;
    # 60 steps at lr 6e-4 refused only 0.3
    assert report["refused"] >= 0.3, report
    assert report["compliment"] >= 0.6, report
    assert report["over_refusal"] <= 0.2, report
