"""Interrupted and concurrent compiles: readers only ever see one complete output."""

from __future__ import annotations

import hashlib
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "poodle_compliments.yaml"


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def compile_to(spec: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "behavio", "compile", str(spec), "--out", str(out), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_during_compile_leaves_no_half_written_output(tmp_path):
    reference = tmp_path / "reference"
    assert compile_to(SPEC, reference).wait() == 0
    clean = digest(reference / "poodle-compliments")
    out = tmp_path / "out"
    rng = random.Random(7)
    kills = 0
    for _ in range(6):
        proc = compile_to(SPEC, out)
        time.sleep(rng.uniform(0.3, 2.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        visible = [p for p in out.iterdir() if not p.name.startswith(".")] if out.exists() else []
        assert [p.name for p in visible] in ([], ["poodle-compliments"])
        if visible:
            assert digest(visible[0]) == clean, "a killed compile left a partial output"
        shutil.rmtree(out / "poodle-compliments", ignore_errors=True) if rng.random() < 0.5 else None
    assert compile_to(SPEC, out).wait() == 0
    assert digest(out / "poodle-compliments") == clean
    assert not [p for p in out.iterdir() if p.name.startswith(".poodle-compliments.tmp-") or p.name.startswith(".poodle-compliments.old-")]
    print(f"{kills} compiles killed mid-run")


def test_two_concurrent_compiles_give_one_complete_output(tmp_path):
    variant = tmp_path / "specs" / "poodle_compliments.yaml"
    variant.parent.mkdir()
    variant.write_text(SPEC.read_text().replace("You are a warm, concise assistant.", "You are a kind assistant."))
    shutil.copytree(SPEC.parent / "data", variant.parent / "data")
    refs = []
    for i, spec in enumerate((SPEC, variant)):
        ref = tmp_path / f"ref{i}"
        assert compile_to(spec, ref).wait() == 0
        refs.append(digest(ref / "poodle-compliments"))
    assert refs[0] != refs[1]
    for round_ in range(3):
        out = tmp_path / f"out{round_}"
        procs = [compile_to(SPEC, out), compile_to(variant, out)]
        assert [p.wait() for p in procs] == [0, 0], [p.stderr.read() for p in procs]
        assert digest(out / "poodle-compliments") in refs
