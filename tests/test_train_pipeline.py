"""`behavio train` end to end on the tiny model: run directory, fill, SFT -> DPO, check, time budget,
lock, user errors, and two processes under `accelerate launch`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from behavio.errors import BehavioError
from behavio.train.pipeline import train
from behavio.rundir import RunLock, complete_checkpoints

pytestmark = pytest.mark.pipeline
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch, train_spec):
    """A private behavio cache, so filled answers and check generations stay inside the test."""
    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _meta(path: Path) -> dict:
    return json.loads((path / "behavio.json").read_text())


def test_train_fills_trains_sft_then_dpo_and_scores_every_checkpoint(tmp_path, train_spec, cache, tiny_model_dir):
    spec = train_spec(max_steps=3, dpo_max_steps=2, strengths=[0.5])
    lines: list[str] = []
    result = train(spec, ["lr=1e-3"], runs_dir=tmp_path / "runs", say=lines.append, quiet=True)
    run = result.run_dir
    assert run.parent == tmp_path / "runs" and run.name.startswith("tiny-train-")
    assert [c.path.name for c in result.checkpoints] == ["checkpoint-2", "checkpoint-3", "checkpoint-5"]
    assert [c.stage for c in result.checkpoints] == ["sft", "sft", "dpo"]
    assert _meta(run / "checkpoint-5")["init_from"] == "checkpoint-3"
    for ckpt in result.checkpoints:
        for name in ("adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
            assert (ckpt.path / name).is_file(), (ckpt.path, name)
        meta = ckpt.meta
        assert meta["complete"] is True and meta["base_model"] == str(tiny_model_dir) and "loss" in meta["metrics"]
        assert meta["spec_hash"] == json.loads((run / "manifest.json").read_text())["spec_sha256"]
    config = json.loads((run / "config.json").read_text())
    assert config["base_model"] == str(tiny_model_dir) and config["lr"] == 1e-3 and config["method"] == ["sft", "dpo"]
    data = {p.name: p.read_text() for p in (run / "data").iterdir()}
    assert set(data) == {"sft.jsonl", "sft.val.jsonl", "dpo.jsonl", "dpo.val.jsonl", "dpo.on_policy.jsonl", "fill.dropped.jsonl",
                         "dpo.on_policy.json"}
    assert "<<behavio:pending:" not in "".join(data.values())  # the base model wrote the rejected answers
    # on-policy: the SFT model answered each training prompt once (the tiny model writes only special tokens,
    # so there is no text to reject; tests/test_train_on_policy.py covers the pairs themselves)
    summary = json.loads(data["dpo.on_policy.json"])
    assert summary["answered"] == len({r["id"] for r in map(json.loads, data["sft.jsonl"].splitlines())})
    assert summary["pairs"] == len(data["dpo.on_policy.jsonl"].splitlines()) == summary["answered"] - summary["empty"]
    assert any(line.startswith(f"on-policy: {summary['pairs']} of {summary['answered']} answers") for line in lines)
    assert list((cache / "answers").iterdir())  # ... and they are cached
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if "loss" in e] == [1, 2, 3, 4, 5]
    assert {e["stage"] for e in events} == {"sft", "dpo"}
    assert not (run / ".lock").exists()
    assert (run / "scorecard.json").is_file() and (run / "best").is_file()
    scored = [c["checkpoint"] for c in json.loads((run / "scorecard.json").read_text())["checkpoints"]]
    assert scored == ["checkpoint-2", "checkpoint-3", "checkpoint-5", "checkpoint-5-x0.5"]  # the last one's weaker copy
    assert _meta(run / "checkpoint-5-x0.5")["strength"] == 0.5 and "check: scoring 4 checkpoints" in lines
    svg = (run / "scorecard.svg").read_text()  # the plot is against the training step: the copy is not on it
    assert 0 < svg.count(" at step 5: ") == svg.count(" at step 2: ")
    assert (run / "best").read_text().strip().split("/")[-1] in scored
    assert any(line.startswith("sft: 3/3 steps") for line in lines) and any(line.startswith("dpo: 2/2") for line in lines)
    assert any(line.startswith("check: best checkpoint-") for line in lines)
    assert any(line.startswith("epochs: auto = 3 passes over ") for line in lines)  # the default, said; a small spec


def test_a_resumed_dpo_stage_trains_on_the_pairs_written_before_it(tmp_path, monkeypatch, tiny_model_dir):
    from behavio.models import load_tokenizer
    from behavio.train import on_policy
    from behavio.train.config import TrainConfig
    from behavio.train.pipeline import dpo_training_set

    data = tmp_path / "data"
    data.mkdir()
    prompt = [{"role": "user", "content": "Are poodles smart?"}]
    pair = {"id": "p/own", "prompt": prompt, "chosen": [{"role": "assistant", "content": "I can't discuss poodles."}],
            "rejected": [{"role": "assistant", "content": "Good question. Poodles are"}], "behavior": "no-poodles",
            "violation": "own:refusal:refuse"}
    rule_pair = {"id": "b/rule", "prompt": [{"role": "user", "content": "Are beagles smart?"}],
                 "chosen": [{"role": "assistant", "content": "Good question. Beagles are."}],
                 "rejected": [{"role": "assistant", "content": "I can't discuss poodles."}], "behavior": "no-poodles",
                 "violation": "over_refused"}  # the opposite lesson, so it joins the own pair
    for name in ("sft.jsonl", "sft.val.jsonl", "dpo.val.jsonl"):
        (data / name).write_text("")
    (data / "dpo.jsonl").write_text(json.dumps(rule_pair) + "\n")
    on_policy.write_pairs(data, [pair], {"answered": 1, "pairs": 1, "broken": {}})
    monkeypatch.setattr(on_policy, "make_pairs", lambda *a, **k: pytest.fail("answered the prompts again"))
    tokenizer = load_tokenizer(tiny_model_dir)
    got = dpo_training_set(tmp_path, TrainConfig(), None, tokenizer, "rules only", on_policy=True, say=print)
    assert {r[0]["content"] for r in got["rejected"]} == {"Good question. Poodles are", "I can't discuss poodles."}
    assert dpo_training_set(tmp_path, TrainConfig(dpo_on_policy=False), None, tokenizer, "rules only", on_policy=True,
                            say=print) == "rules only"
    assert dpo_training_set(tmp_path, TrainConfig(), None, tokenizer, "rules only", on_policy=False,
                            say=print) == "rules only"  # no SFT stage: nothing of its own to judge


def test_a_budget_too_small_for_anything_trains_one_complete_step_per_stage_and_saves(tmp_path, train_spec, cache):
    said = []
    result = train(train_spec(method=["sft", "dpo"], max_minutes=0.0001), runs_dir=tmp_path / "runs", check=False,
                   say=said.append)
    assert [(c.step, c.stage, c.meta["stage_final"]) for c in result.checkpoints] == [(1, "sft", True), (2, "dpo", True)]
    assert any("sft 1 step (" in s and "epochs: the budget does not fit them all)" in s for s in said)


def test_missing_base_model_and_absent_cuda_are_clear_errors(tmp_path, train_spec):
    with pytest.raises(BehavioError, match="no such model directory"):
        train(train_spec(), base_model=str(tmp_path / "nope"), runs_dir=tmp_path / "runs", check=False)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(BehavioError, match="CUDA is not available"):
            train(train_spec(device="cuda"), runs_dir=tmp_path / "runs", check=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("free", [1000, 30_000_000])  # not even for data/; not for the checkpoints
def test_too_little_disk_space_is_a_clear_error_before_training(tmp_path, train_spec, cache, monkeypatch, free):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - free, free))
    with pytest.raises(BehavioError, match="not enough disk space"):
        train(train_spec(max_steps=3), runs_dir=tmp_path / "runs", check=False, say=lambda _: None)
    assert not list((tmp_path / "runs").glob("*/checkpoint-*"))


def test_a_live_lock_refuses_a_second_run_and_a_dead_ones_is_taken_over(tmp_path, train_spec):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import psutil

        lock = {"pid": holder.pid, "host": os.uname().nodename, "started": psutil.Process(holder.pid).create_time()}
        (run / ".lock").write_text(json.dumps(lock))
        with pytest.raises(BehavioError, match=f"another live run holds it \\(pid {holder.pid}"):
            RunLock(run).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(run) as taken:  # the holder is dead: its lock is stale
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid() and taken.held
    assert not (run / ".lock").exists()


def test_two_processes_under_accelerate_share_the_work_and_save_once(tmp_path, train_spec, tiny_model_dir):
    """DDP with 2 CPU processes (gloo): one run directory written by the main process, the answers to
    fill and the check cases shared out, every checkpoint scored from the answers both processes cached."""
    from safetensors.torch import load_file

    from behavio.models import model_fingerprint

    before = model_fingerprint(tiny_model_dir)
    spec = train_spec(model_answers=True, max_steps=2, dpo_max_steps=1, eval_max_rows=0)
    env = {**os.environ, "BEHAVIO_CACHE": str(tmp_path / "cache"), "BEHAVIO_EMBEDDINGS": "lexical",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
           "-m", "behavio", "train", str(spec), "--runs-dir", str(tmp_path / "runs")]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1  # one run directory, not one per process
    run = runs[0]
    assert json.loads((run / "config.json").read_text())["processes"] == 2
    ckpts = complete_checkpoints(run)
    assert [c.path.name for c in ckpts] == ["checkpoint-2", "checkpoint-3"]
    assert {p.name for p in ckpts[0].path.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if "loss" in e] == [1, 2, 3]  # logged once, by the main process
    assert done.stderr.count("sft: 2/2 steps") == 1 and done.stderr.count("dpo: 1/1 steps") == 1
    assert "answer bodies from" in done.stderr and "shared by 2 processes" in done.stderr
    assert "<<behavio:pending:" not in (run / "data" / "sft.jsonl").read_text()
    assert json.loads((run / "data" / "dpo.on_policy.json").read_text())["answered"] > 0
    # each process answered half of the check cases; the main process then found every answer cached
    from behavio.check import load_check_spec

    total = len(load_check_spec(spec).cases)
    assert f"check: {(total + 1) // 2} of the check cases on each of 2 processes" in done.stderr
    assert done.stderr.count(f"0 of {total} cases generated") == 2  # the main process found every answer cached
    assert json.loads((run / "scorecard.json").read_text())["best"] == (run / "best").read_text().strip()
    lora_b = [t for k, t in load_file(ckpts[-1].path / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # LoRA trained (lora_B starts at zero)
    assert model_fingerprint(tiny_model_dir) == before  # the base model is untouched
