"""The process settings the ``behavio`` command applies at start (behavio/process_settings.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# Allocates, touches and frees a 64 MB block ten times; prints whether the setting applied and the page faults
# per page of one block (1.0: every block faulted in again; ~0.1: only the first one did).
FAULTS = textwrap.dedent("""
    import resource, sys
    from behavio.process_settings import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    block, rounds = 64 * 2**20, 10
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        buf = bytearray(block)
        buf[::4096] = b"\\x01" * (block // 4096)
        del buf
    print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / (rounds * block / 4096))
""")

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
                                reason="glibc's malloc only")


def _faults(mode: str, **env: str) -> tuple[str, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], env={**clean, **env}, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], float(out[1])


@glibc_only
def test_freed_memory_is_reused_instead_of_faulting_in_again():
    applied, per_page = _faults("keep")
    assert applied == "True"
    assert per_page < 0.3
    assert _faults("default")[1] > 0.9  # the problem the setting solves: every large block faults in anew


@glibc_only
def test_an_explicit_malloc_setting_in_the_environment_wins():
    assert _faults("keep", MALLOC_MMAP_MAX_="65536")[0] == "False"


@glibc_only
def test_the_setting_can_be_turned_off():
    applied, per_page = _faults("keep", BEHAVIO_KEEP_FREED_MEMORY="0")
    assert applied == "False" and per_page > 0.9


def test_the_command_sleeps_while_waiting_unless_told_otherwise():
    script = "import os, behavio.cli; print(os.environ['OMP_WAIT_POLICY'])"
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = lambda env: subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,  # noqa: E731
                                     check=True).stdout.strip()
    assert run(clean) == "PASSIVE"
    assert run({**clean, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
