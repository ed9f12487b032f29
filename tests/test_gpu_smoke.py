"""bench/gpu_smoke.sh in its quick CPU mode: the GPU smoke test's own code path (4-bit Qwen2 model, anchored
padding-free SFT, on-policy DPO, check, every assertion) runs in the suite, so the script cannot rot."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.pipeline
ROOT = Path(__file__).resolve().parents[1]


def test_gpu_smoke_script_passes_in_quick_cpu_mode(tmp_path):
    env = {**os.environ, "BEHAVIO_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_smoke.sh"), "--quick", "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert "gpu smoke: OK" in done.stdout and '"device": "cpu"' in done.stdout
    assert '"checkpoints": ["checkpoint-2", "checkpoint-4", "checkpoint-6"]' in done.stdout
    assert "peak GPU memory: n/a (CPU); SFT " in done.stdout and "tokens/s" in done.stdout


def test_gpu_smoke_refuses_the_full_run_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the full smoke test")
    env = {**os.environ, "BEHAVIO_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_smoke.sh"), "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "gpu smoke: FAILED: CUDA is not available" in done.stderr
