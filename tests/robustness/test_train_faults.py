"""Training faults during a checkpoint save, on the tiny model.

SIGKILL: a `behavio train` process is paused inside the save path (``_save_faults.py``: between the
trainer's files, with one cut in half, after the rename, before ``behavio.json``) and SIGKILLed there,
at two fixed points and at seeded random ones. `behavio train --resume` must skip the incomplete
checkpoint (saying so), continue from the newest complete one, and end with the checkpoints, weights
and loss log of an uninterrupted run.

ENOSPC: a save fails the way each writer fails on a full disk. The complete checkpoints keep their
bytes, nothing half-written looks complete, and the user gets one message: no space left, what was
being written, how to resume (exit 2 without a traceback on the command line); the resume works.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from _save_faults import FILE_EVENTS, Faults
from safetensors.torch import load_file

from behavio.errors import BehavioError
from behavio.train.pipeline import train
from behavio.rundir import LOW_SPACE, DiskFull, MetricsLog, complete_checkpoints, disk_full, incomplete_checkpoints

pytestmark = pytest.mark.pipeline
ROOT = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).with_name("_save_faults.py")
SETTINGS = {"eval_max_rows": 0, "lr": 1e-3, "dpo_lr": 1e-3, "max_steps": 4, "dpo_max_steps": 4}  # a checkpoint every 2
SFT_STEPS = 4
SAVES = [("sft", 2), ("sft", 4), ("dpo", 2), ("dpo", 4)]
FINAL_STEP = 8
_shared: dict = {}


def global_step(stage: str, step: int) -> int:
    return step if stage == "sft" else SFT_STEPS + step


# ---------------------------------------------------------------------------------------------
# The launcher: `behavio train` children forked from one warm interpreter
# ---------------------------------------------------------------------------------------------


@dataclass
class Child:
    code: int          # -9: SIGKILLed
    paused: bool       # it reached the kill point (and was killed there)
    log: str


class Launcher:
    def __init__(self, work: Path):
        self.work = work
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.stderr = open(work / "launcher.err", "wb")
        self.proc = subprocess.Popen([sys.executable, str(HELPER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, cwd=ROOT, env=env)
        self._buf = b""
        assert self._line(300) == "ready", (work / "launcher.err").read_text()[-3000:]

    def _line(self, timeout: float) -> str | None:
        deadline = time.time() + timeout
        while b"\n" not in self._buf:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.time()))
            if not ready:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError("launcher died: " + (self.work / "launcher.err").read_text()[-3000:])
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def run(self, argv: list[str], log: Path, *, env: dict, point: dict | None = None, action: str = "pause",
            ballast: Path | None = None, timeout: float = 300) -> Child:
        marker = log.with_suffix(".paused")
        request = {"argv": argv, "log": str(log), "env": env, "cwd": str(ROOT), "point": point, "action": action,
                   "marker": str(marker), "ballast": str(ballast) if ballast else None}
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        pid = json.loads(self._line(60))["pid"]
        deadline, paused = time.time() + timeout, False
        while True:
            line = self._line(0.05)
            if line is not None:
                return Child(json.loads(line)["code"], paused, log.read_text(errors="replace"))
            if point is not None and action == "pause" and not paused and marker.exists():
                os.kill(pid, signal.SIGKILL)  # the child sits inside the save path
                paused = True
            elif time.time() > deadline:
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.stderr.close()


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    started = Launcher(tmp_path_factory.mktemp("launcher"))
    yield started
    started.close()


@pytest.fixture
def env(tmp_path_factory) -> dict:
    """One behavio cache for the module: the base model's answers are filled once."""
    if "cache" not in _shared:
        _shared["cache"] = tmp_path_factory.mktemp("cache")
    return {"BEHAVIO_CACHE": str(_shared["cache"])}


@pytest.fixture
def reference(launcher, train_spec, env, tmp_path_factory) -> Path:
    """The same training without interruption (run once per module): its run directory."""
    if "reference" not in _shared:
        work = tmp_path_factory.mktemp("uninterrupted")
        done = launcher.run(["train", str(train_spec(**SETTINGS)), "--no-check", "--runs-dir", str(work / "runs")],
                            work / "train.log", env=env)
        assert done.code == 0, done.log[-3000:]
        (run,) = (work / "runs").iterdir()
        assert [c.step for c in complete_checkpoints(run)] == [2, 4, 6, 8]
        _shared["reference"] = run
    return _shared["reference"]


# ---------------------------------------------------------------------------------------------
# What a run must look like after the faults
# ---------------------------------------------------------------------------------------------


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_adapter(path: Path, reference: Path) -> None:
    got = load_file(path / "adapter_model.safetensors")
    want = load_file(reference / "adapter_model.safetensors")
    assert got.keys() == want.keys(), path
    for name, tensor in got.items():
        assert (tensor - want[name]).abs().max() < 1e-5, (path.name, name)


def assert_like_reference(run: Path, reference: Path) -> None:
    """Same checkpoints with the same weights, a loss log without gaps or repeats, nothing left over."""
    saved = complete_checkpoints(run)
    assert [c.step for c in saved] == [c.step for c in complete_checkpoints(reference)]
    assert saved[-1].step == FINAL_STEP
    for ckpt in saved:
        assert_same_adapter(ckpt.path, reference / ckpt.path.name)
    assert incomplete_checkpoints(run) == []
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [e["step"] for e in events if "loss" in e]
    assert logged == list(range(1, FINAL_STEP + 1)), logged
    expected = {e["step"]: e["loss"] for e in map(json.loads, (reference / "metrics.jsonl").read_text().splitlines())
                if "loss" in e}
    assert all(abs(e["loss"] - expected[e["step"]]) < 1e-4 for e in events if "loss" in e)
    assert not list(run.glob(".staging/*/checkpoint-*")) and not list(run.rglob(".behavio.json.tmp-*"))
    assert not (run / ".lock").exists()


def kill_in_save_and_resume(launcher: Launcher, spec: Path, work: Path, env: dict, reference: Path,
                            point: dict) -> dict:
    """SIGKILL `behavio train` at ``point`` of a save, check what is on disk, resume, compare to ``reference``."""
    work.mkdir(parents=True, exist_ok=True)
    killed = launcher.run(["train", str(spec), "--no-check", "--runs-dir", str(work / "runs")], work / "killed.log",
                          env=env, point=point)
    assert killed.paused and killed.code == -signal.SIGKILL, (point, killed.code, killed.log[-3000:])
    (run,) = (work / "runs").iterdir()
    saving = global_step(point["stage"], point["step"])
    finished = point["event"] == "behavio.json" and point["when"] == "after"
    complete = complete_checkpoints(run)
    assert [c.step for c in complete] == [s for s in (2, 4, 6, 8) if s < saving or (finished and s == saving)]
    for ckpt in complete:  # what was complete before the kill is intact
        assert_same_adapter(ckpt.path, reference / ckpt.path.name)
    renamed = (point["event"], point["when"]) in {("publish", "after"), ("behavio.json", "before"),
                                                  ("behavio.json", "partial")}
    incomplete = incomplete_checkpoints(run)
    assert [p.name for p in incomplete] == ([f"checkpoint-{saving}"] if renamed else []), point

    resumed = launcher.run(["train", str(spec), "--no-check", "--resume", str(run)], work / "resumed.log", env=env)
    assert resumed.code == 0, (point, resumed.log[-3000:])
    for path in incomplete:
        assert f"resume: skipping incomplete {path.name} (no complete behavio.json)" in resumed.log
    if complete:
        newest = complete[-1]
        assert f"resume: from {newest.path.name} ({newest.stage} step {newest.meta['stage_step']})" in resumed.log
    else:
        assert "resume: no complete checkpoint yet; starting training from the beginning" in resumed.log
    loaded = [line.split()[2] for line in resumed.log.splitlines() if line.startswith("resume: from ")]
    assert not set(loaded) & {p.name for p in incomplete}
    assert_like_reference(run, reference)
    return {"incomplete_left": len(incomplete), "incomplete_loaded": len(set(loaded) & {p.name for p in incomplete})}


# ---------------------------------------------------------------------------------------------
# SIGKILL during a save
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", [
    {"stage": "dpo", "step": 2, "event": "behavio.json", "when": "partial"},  # checkpoint-6 renamed, behavio.json torn
    {"stage": "sft", "step": 2, "event": "optimizer.pt", "when": "partial"},  # the first save, half its files
], ids=["dpo-behavio.json", "first-save"])
def test_sigkill_inside_a_checkpoint_save_then_resume(launcher, train_spec, env, reference, tmp_path, point):
    kill_in_save_and_resume(launcher, train_spec(**SETTINGS), tmp_path, env, reference, point)


def test_sigkill_at_random_points_of_the_save_path(launcher, train_spec, env, reference, tmp_path):
    """One seeded random moment in each of the four saves: two among the trainer's files, two in the publication."""
    rng = random.Random(20240606)
    trainer_files = [(event, when) for event in FILE_EVENTS for when in ("before", "partial", "after")]
    publication = [("publish", "before"), ("publish", "after")] + [("behavio.json", w) for w in ("before", "partial", "after")]
    saves = rng.sample(SAVES, len(SAVES))
    points = [dict(zip(("stage", "step", "event", "when"), (*save, *rng.choice(publication if i % 2 else trainer_files))))
              for i, save in enumerate(saves)]
    spec = train_spec(**SETTINGS)
    outcomes = [kill_in_save_and_resume(launcher, spec, tmp_path / f"kill{i}", env, reference, point)
                for i, point in enumerate(points)]
    print(f"{len(points)} kill points ({'; '.join(' '.join(map(str, p.values())) for p in points)}): "
          f"{len(outcomes)} resumed to step {FINAL_STEP} with the reference weights, "
          f"{sum(o['incomplete_left'] for o in outcomes)} left an incomplete checkpoint, "
          f"{sum(o['incomplete_loaded'] for o in outcomes)} incomplete checkpoints loaded")


# ---------------------------------------------------------------------------------------------
# ENOSPC during a save
# ---------------------------------------------------------------------------------------------


def test_disk_full_is_recognised_from_each_writer(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    assert disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path)
    assert disk_full(SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"), tmp_path)
    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert not disk_full(torch_error, tmp_path)  # torch does not say why: only a full disk makes it ENOSPC
    assert not disk_full(OSError(errno.EACCES, "Permission denied"), tmp_path)
    assert not disk_full(BehavioError("not enough disk space"), tmp_path)
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("saving failed") from exc
    except RuntimeError as chained:
        assert disk_full(chained, tmp_path)
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, LOW_SPACE - 1))
    assert disk_full(torch_error, tmp_path)


@pytest.mark.parametrize("event", ["README.md", "adapter_model.safetensors", "optimizer.pt", "trainer_state.json",
                                   "behavio.json"])
def test_enospc_during_a_save_keeps_the_complete_checkpoints_and_says_how_to_resume(tmp_path, train_spec, monkeypatch,
                                                                                   event):
    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    before: dict = {}

    def snapshot():  # the moment the disk fills up: every complete checkpoint, byte for byte
        (run,) = runs.iterdir()
        before.update({c.path.name: digest(c.path) for c in complete_checkpoints(run)})

    faults = Faults({"stage": "sft", "step": 4, "event": event}, "enospc", on_fault=snapshot).install(monkeypatch.setattr)
    spec = train_spec(**SETTINGS)
    with pytest.raises(BehavioError) as caught:
        train(spec, runs_dir=runs, check=False, say=lambda _: None)
    assert faults.fired, "the fault was never injected"
    (run,) = runs.iterdir()
    removed = "" if event == "README.md" else "; its half-written files were removed"  # (nothing in checkpoint-4 yet)
    assert str(caught.value) == (f"no space left on device while saving checkpoint-4 (sft step 4){removed}, checkpoint-2 "
                                 f"is the newest complete checkpoint. Free some space, then continue with: "
                                 f"behavio train {spec} --resume {run}")
    assert list(before) == ["checkpoint-2"]
    assert {c.path.name: digest(c.path) for c in complete_checkpoints(run)} == before  # untouched
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"]  # nothing half-written looks complete
    assert not list(run.glob(".staging/*/checkpoint-*")) and not list(run.rglob(".behavio.json.tmp-*"))
    assert not (run / ".lock").exists()


def test_enospc_on_the_command_line_exits_2_and_its_resume_command_works(launcher, train_spec, env, reference,
                                                                          tmp_path):
    spec = train_spec(**SETTINGS)
    failed = launcher.run(["train", str(spec), "--no-check", "--runs-dir", str(tmp_path / "runs")], tmp_path / "full.log",
                          env=env, point={"stage": "dpo", "step": 2, "event": "optimizer.pt"}, action="enospc")
    assert failed.code == 2, failed.log[-3000:]
    assert "Traceback" not in failed.log
    (run,) = (tmp_path / "runs").iterdir()
    said = re.findall(r"no space left on device[^\r\n]*", failed.log)  # (tqdm draws with \r, without a newline)
    assert said == [(f"no space left on device while saving checkpoint-6 (dpo step 2); its half-written files were "
                    f"removed, checkpoint-4 is the newest complete checkpoint. Free some space, then continue with: "
                    f"behavio train {spec} --resume {run}")]
    assert [c.step for c in complete_checkpoints(run)] == [2, 4] and incomplete_checkpoints(run) == []
    command = said[0].split("continue with: behavio ", 1)[1].split()
    resumed = launcher.run(command + ["--no-check"], tmp_path / "resumed.log", env=env)
    assert resumed.code == 0, resumed.log[-3000:]
    assert "resume: from checkpoint-4 (sft step 4)" in resumed.log
    assert_like_reference(run, reference)


def test_a_really_full_disk_during_a_save(launcher, train_spec, env, reference, tmp_path):
    """The same on a real 100 MB tmpfs, filled up just before torch.save writes optimizer.pt: torch's own error
    (which does not say ENOSPC), the message, and the resume once the space is freed. Needs root (mount)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100m", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        spec = train_spec(**SETTINGS)
        failed = launcher.run(["train", str(spec), "--no-check", "--runs-dir", str(disk / "runs")], tmp_path / "full.log",
                              env=env, point={"stage": "dpo", "step": 2, "event": "optimizer.pt"}, action="fill",
                              ballast=disk / "ballast")
        assert failed.code == 2 and "Traceback" not in failed.log, failed.log[-3000:]
        (run,) = (disk / "runs").iterdir()
        said = re.findall(r"no space left on device[^\r\n]*", failed.log)
        assert said == [(f"no space left on device while saving checkpoint-6 (dpo step 2); its half-written files "
                         f"were removed, checkpoint-4 is the newest complete checkpoint. Free some space, then continue "
                         f"with: behavio train {spec} --resume {run}")]
        assert [c.step for c in complete_checkpoints(run)] == [2, 4] and incomplete_checkpoints(run) == []
        for ckpt in complete_checkpoints(run):
            assert_same_adapter(ckpt.path, reference / ckpt.path.name)
        (disk / "ballast").unlink()
        resumed = launcher.run(said[0].split("continue with: behavio ", 1)[1].split() + ["--no-check"],
                               tmp_path / "resumed.log", env=env)
        assert resumed.code == 0, resumed.log[-3000:]
        assert_like_reference(run, reference)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_torn_last_line_in_metrics_jsonl_does_not_break_resume(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    for step in (1, 2, 3):
        log.write({"step": step, "loss": 1.0 / step})
    with open(log.path, "a") as fh:
        fh.write('{"step": 4, "lo')  # the disk filled up in the middle of an append
    log.truncate_after(2)
    assert [e["step"] for e in log.read()] == [1, 2]


def test_a_full_disk_while_logging_names_metrics_jsonl(tmp_path, monkeypatch):
    import builtins

    log = MetricsLog(tmp_path, tensorboard=False)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(builtins, "open", full)
    with pytest.raises(DiskFull, match=f"no space left on device while writing {re.escape(str(log.path))}$"):
        log.write({"step": 1, "loss": 1.0})


def test_a_json_write_that_fails_leaves_no_temp_file(tmp_path, monkeypatch):
    from behavio import rundir

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.os, "replace", full)
    with pytest.raises(OSError):
        rundir.write_json(tmp_path / "config.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []
