# python bench/threads_bench.py [--repeats 5]      (prints a table; writes nothing)
"""What a second torch thread buys on this machine: fp32 matrix products at SFT shapes, 1 thread vs 2.

Each thread count runs in a fresh process (OpenMP's pool is sized once), ``OMP_WAIT_POLICY`` as the behavio
CLI sets it unless the environment says otherwise. Shapes: the products of one SmolLM2-135M layer
(hidden 576, key/value 192, MLP 1536) on a batch of ~800 tokens, as in an SFT step of the poodle spec.
A second core that is a real core gives ~2x; two vCPUs that share one physical core (SMT siblings the VM
does not report) give little more than 1x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import machine  # noqa: E402  (bench/quality.py: the machine line of every results file)

SHAPES = [(800, 576, 576), (800, 576, 192), (800, 576, 1536), (800, 1536, 576)]  # (tokens, in, out): q/o, k/v, gate/up, down


def _worker(repeats: int) -> dict:
    import torch

    torch.manual_seed(0)
    mats = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in SHAPES]
    flops_per_round = sum(2 * m * k * n for m, k, n in SHAPES) * 20
    for a, b in mats:  # warm-up
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(20):
            for a, b in mats:
                a @ b
        times.append(time.perf_counter() - start)
    return {"gflops": flops_per_round / statistics.median(times) / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(_worker(args.repeats)), flush=True)
        return
    results = {}
    for threads in (1, 2, 1, 2):  # interleaved, so machine noise hits both alike
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        out = subprocess.run([sys.executable, __file__, "--worker", "--repeats", str(args.repeats)], env=env,
                             capture_output=True, text=True, check=True).stdout
        line = next(x for x in out.splitlines() if x.startswith("RESULT "))
        results.setdefault(threads, []).append(json.loads(line[7:])["gflops"])
    print(f"{machine()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}")
    print("| threads | GFLOP/s (median of the runs' medians) | runs |\n|---|---|---|")
    for threads, runs in results.items():
        print(f"| {threads} | {statistics.median(runs):.0f} | {', '.join(f'{r:.0f}' for r in runs)} |")
    print(f"2 threads / 1 thread: {statistics.median(results[2]) / statistics.median(results[1]):.2f}x")


if __name__ == "__main__":
    main()
