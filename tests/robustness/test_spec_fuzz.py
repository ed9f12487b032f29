"""Property-based fuzzing of the shipped specs: every mutation compiles or is rejected cleanly.

"Cleanly" means a SpecError whose every line is ``file:line:col: ...`` — never another
exception, never a hang (10 s per mutation). CI runs a short budget; raise it with
BEHAVIO_FUZZ_EXAMPLES (bench/robustness.py reports larger runs in bench/ROBUSTNESS.md).
"""

from __future__ import annotations

import os
import random
import re
import signal
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from behavio.compiler.build import compile_spec
from behavio.errors import SpecError
from behavio.fuzz import mutate

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
EXAMPLES = int(os.environ.get("BEHAVIO_FUZZ_EXAMPLES", "40"))  # per shipped spec; 60 took ~57 s of CI for 17 specs
LOCATED = re.compile(r"^.+:\d+:\d+: ")


# A mutated spec compiles in ~1 s; the quadratic warning bug this guards against took 260 s. 10 s failed once in CI
# on a 0.7 s compile (a stall of the VM, not of the compiler: the same example re-ran in 0.7 s three times).
DEADLINE = 30


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def compile_with_deadline(path: Path, seconds: int = DEADLINE):
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        return compile_spec(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(ROOT / "specs" / "data", folder / "data")
    return folder


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), rounds=st.integers(1, 3))
def test_mutated_spec_compiles_or_fails_cleanly(workdir, spec, seed, rounds):
    rng = random.Random(seed)
    text, done = spec.read_text(), []
    for _ in range(rounds):
        text, what = mutate(text, rng)
        done.append(what)
    path = workdir / spec.name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        compile_with_deadline(path)
    except SpecError as exc:
        for issue in exc.issues:
            assert LOCATED.match(str(issue)), f"{done}: unlocated error {issue}"
    except Hang:
        pytest.fail(f"{done}: compile took more than {DEADLINE} s")
