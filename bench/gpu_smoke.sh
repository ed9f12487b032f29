#!/usr/bin/env bash
# bash bench/gpu_smoke.sh [--quick] [--out DIR]
# The CUDA path end to end on one GPU, no network, under 10 minutes: a random-init ~110M Qwen2 model,
# QLoRA anchored padding-free SFT -> on-policy DPO -> check, asserted; prints peak GPU memory and tokens/s.
# --quick: the same on CPU with a tiny model (what tests/test_gpu_smoke.py runs). See bench/gpu_smoke.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 BEHAVIO_EMBEDDINGS="${BEHAVIO_EMBEDDINGS:-lexical}"
exec python bench/gpu_smoke.py "$@"
