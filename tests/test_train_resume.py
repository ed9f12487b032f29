"""Resume: a real training process is killed with SIGKILL (in SFT, then in DPO); `--resume` continues
from the newest complete checkpoint, skips an incomplete one, reaches the same final step and the same
weights as an uninterrupted run, and the loss log continues without gaps or repeats."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from behavio.train.pipeline import train
from behavio.rundir import complete_checkpoints

pytestmark = pytest.mark.pipeline
ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"eval_max_rows": 0, "lr": 1e-3, "dpo_lr": 1e-3, "max_steps": 4, "dpo_max_steps": 4}  # a checkpoint every 2
FINAL_STEP = 8
_reference: dict = {}


@pytest.fixture
def uninterrupted(tmp_path_factory, train_spec, monkeypatch):
    """The same training without interruption (the reference for weights and steps), run once per module."""
    if not _reference:
        out = tmp_path_factory.mktemp("uninterrupted")
        monkeypatch.setenv("BEHAVIO_CACHE", str(out / "cache"))
        _reference["result"] = train(train_spec(**SETTINGS), runs_dir=out / "runs", check=False, say=lambda _: None)
    return _reference["result"]


def _kill_at(spec: Path, runs: Path, step: int, env: dict) -> Path:
    """Start `behavio train` in a subprocess and SIGKILL it once checkpoint-<step> is complete."""
    proc = subprocess.Popen([sys.executable, "-m", "behavio", "train", str(spec), "--no-check", "--runs-dir", str(runs)],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            done = list(runs.glob(f"*/checkpoint-{step}/behavio.json"))
            if done:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return done[0].parent.parent
            time.sleep(0.02)
        raise AssertionError(f"training ended before checkpoint-{step}: {proc.stderr.read().decode()[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("kill_step, stage", [(2, "sft"), (6, "dpo")])
def test_resume_after_sigkill_reaches_the_same_final_step_and_weights(tmp_path, train_spec, uninterrupted, kill_step,
                                                                       stage, monkeypatch):
    spec = train_spec(**SETTINGS)
    env = {**os.environ, "BEHAVIO_CACHE": str(tmp_path / "cache")}
    run = _kill_at(spec, tmp_path / "runs", kill_step, env)
    assert (run / ".lock").exists()  # left behind by the killed process
    newest = complete_checkpoints(run)[-1]
    assert newest.step >= kill_step and newest.stage == stage
    fake = run / f"checkpoint-{newest.step + 1}"  # a crash during save: files, but no complete behavio.json
    shutil.copytree(newest.path, fake)
    (fake / "behavio.json").write_text('{"step": %d, "complete": false}' % (newest.step + 1))

    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    lines: list[str] = []
    result = train(spec, resume=run, check=False, say=lines.append)
    assert f"resume: skipping incomplete {fake.name} (no complete behavio.json)" in lines
    assert f"resume: from {newest.path.name} ({stage} step {newest.meta['stage_step']})" in lines
    steps = [c.step for c in result.checkpoints]
    assert steps[-1] == FINAL_STEP == uninterrupted.checkpoints[-1].step
    assert steps == [c.step for c in uninterrupted.checkpoints]
    final = load_file(result.checkpoints[-1].path / "adapter_model.safetensors")
    reference = load_file(uninterrupted.checkpoints[-1].path / "adapter_model.safetensors")
    assert final.keys() == reference.keys()
    for name, tensor in final.items():
        assert (tensor - reference[name]).abs().max() < 1e-5, name

    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [e["step"] for e in events if "loss" in e]
    assert logged == list(range(1, FINAL_STEP + 1))  # the curve continues: no gap, no repeated step
    expected = {e["step"]: e["loss"] for e in uninterrupted.run_dir.joinpath("metrics.jsonl").read_text().splitlines()
                for e in [json.loads(e)] if "loss" in e}
    assert all(abs(e["loss"] - expected[e["step"]]) < 1e-4 for e in events if "loss" in e)
    assert not (run / ".lock").exists()
