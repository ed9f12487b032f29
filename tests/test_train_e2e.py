"""End to end on the embedded SmolLM2 (CPU, a few minutes): `behavio run` on the poodle spec with
reduced steps and generation budgets, producing a scorecard and a best checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REDUCED = ["max_steps=12", "dpo_max_steps=6", "dpo_max_pairs=48", "eval_max_rows=8", "save_steps=12",
           "fill_max_new_tokens=24"]


@pytest.mark.e2e
def test_behavio_run_on_the_poodle_spec_with_the_default_model(tmp_path):
    from behavio.errors import BehavioError
    from behavio.models import default_gguf_path

    try:
        default_gguf_path()
    except BehavioError as exc:
        pytest.skip(str(exc))
    spec = tmp_path / "poodle_compliments.yaml"  # the shipped spec, with a shorter check answer budget
    spec.write_text((ROOT / "specs" / "poodle_compliments.yaml").read_text() + "check: {max_new_tokens: 32}\n")
    cmd = [sys.executable, "-m", "behavio", "run", str(spec), *REDUCED, "--runs-dir", str(tmp_path / "runs"),
           "--out", str(tmp_path / "generated")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert done.returncode in (0, 1), done.stderr[-4000:]  # 1: ran fine, the best is below a threshold
    (run,) = (tmp_path / "runs").iterdir()
    scorecard = json.loads((run / "scorecard.json").read_text())
    assert [c["checkpoint"] for c in scorecard["checkpoints"]] == ["checkpoint-12", "checkpoint-18"]
    assert (run / "best").read_text().strip() == scorecard["best"]
    assert (tmp_path / "generated" / "poodle-compliments" / "manifest.json").is_file()
    assert "sft: 12/12 steps" in done.stderr and "dpo: 6/6 steps" in done.stderr
