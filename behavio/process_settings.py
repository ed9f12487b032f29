"""Process-wide settings for CPU training and generation, applied once when the ``behavio`` command starts.

* OpenMP threads sleep while they wait (``OMP_WAIT_POLICY=PASSIVE``): spinning waits make CPU training and
  generation up to ~50x slower when another process shares the cores (measured on 2 cores). Set before torch
  starts its thread pool; an explicit ``OMP_WAIT_POLICY`` wins.
* glibc keeps the memory torch frees (``mallopt``: no ``mmap`` for large blocks, no trimming of the heap).
  By default every block over a few MB is a fresh ``mmap``, and every page of it faults in (and is zeroed by
  the kernel) on first touch: an SFT step allocates and frees ~100 MB logits and activations many times, so
  a poodle run took 12.6 million page faults and 199 s of system time. Reusing freed memory made an SFT
  step 1.12x faster (median of 3) on a 2-core AMD EPYC VM with the same peak memory (bench/RESULTS.md "Freed memory").
  ``BEHAVIO_KEEP_FREED_MEMORY=0`` turns this off; so does a ``MALLOC_MMAP_MAX_`` or ``MALLOC_TRIM_THRESHOLD_``
  in the environment (glibc reads those itself, and they win).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_MAX = -4
TRIM_ABOVE = 2**31 - 1  # bytes free at the heap's top before glibc returns them: never, in practice


def set_up_process() -> None:
    """Apply both settings; call before torch is imported (the OpenMP one needs it)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    keep_freed_memory()


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed memory instead of returning it to the kernel; False where it does not
    apply: not glibc, ``BEHAVIO_KEEP_FREED_MEMORY=0``, or ``MALLOC_MMAP_MAX_``/``MALLOC_TRIM_THRESHOLD_`` set."""
    if os.environ.get("BEHAVIO_KEEP_FREED_MEMORY", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux") or any(k in os.environ for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE))


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None  # musl and others: their own allocator, their own rules
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc
