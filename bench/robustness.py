"""python bench/robustness.py [--fuzz 2000] — counts for bench/ROBUSTNESS.md (spec fuzzing, template sandbox).

Every mutated spec must compile or be rejected with located errors; every sandbox payload must be
a clean error. Training/checkpoint fault figures come from tests/robustness (see ROBUSTNESS.md).
"""

from __future__ import annotations

import argparse
import collections
import platform
import random
import re
import shutil
import signal
import tempfile
import time
import traceback
from pathlib import Path

from behavio.compiler.build import compile_spec
from behavio.compiler.sandbox import TemplateProblem, render
from behavio.errors import SpecError
from behavio.fuzz import mutate

ROOT = Path(__file__).resolve().parents[1]
LOCATED = re.compile(r"^.+:\d+:\d+: ")


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def fuzz(n: int, seed: int) -> dict:
    counts = collections.Counter()
    kinds = collections.Counter()
    slowest = 0.0
    examples = []
    signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(ROOT / "specs" / "data", Path(tmp) / "data")
        specs = sorted((ROOT / "specs").glob("*.yaml"))
        rng = random.Random(seed)
        for i in range(n):
            spec = specs[i % len(specs)]
            text = spec.read_text()
            for _ in range(rng.randint(1, 3)):
                text, what = mutate(text, rng)
                kinds[what.split()[0]] += 1
            path = Path(tmp) / spec.name
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
            start = time.perf_counter()
            signal.alarm(10)
            try:
                compile_spec(path)
                counts["compiled"] += 1
            except SpecError as exc:
                counts["rejected"] += 1
                if not all(LOCATED.match(str(x)) for x in exc.issues):
                    counts["rejected without file:line:col"] += 1
            except Hang:
                counts["hang > 10 s"] += 1
            except Exception:  # noqa: BLE001 - counting tracebacks is the point
                counts["traceback"] += 1
                examples.append(traceback.format_exc(limit=3))
            finally:
                signal.alarm(0)
            slowest = max(slowest, time.perf_counter() - start)
    return {"counts": counts, "kinds": kinds, "slowest": slowest, "examples": examples[:3]}


def sandbox() -> tuple[int, int]:
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from test_sandbox import PAYLOADS  # the same payload list the tests use

    clean = 0
    for payload in PAYLOADS:
        try:
            render(payload, {"x": "hi"})
        except TemplateProblem:
            clean += 1
    return len(PAYLOADS), clean


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fuzz", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    result = fuzz(args.fuzz, args.seed)
    payloads, clean = sandbox()
    c = result["counts"]
    print(f"fuzz: {dict(c)}; slowest {result['slowest']:.2f} s; sandbox {clean}/{payloads} clean errors")
    for ex in result["examples"]:
        print(ex)
    section = (
        f"Command: `python bench/robustness.py --fuzz {args.fuzz} --seed {args.seed}` on {platform.machine()}, Python {platform.python_version()}.\n\n"
        "| figure | count |\n|---|---|\n"
        f"| mutated specs tried (1-3 mutations each: {', '.join(f'{k} {v}' for k, v in sorted(result['kinds'].items()))}) | {args.fuzz} |\n"
        f"| compiled | {c['compiled']} |\n| rejected, every error with file:line:col | {c['rejected'] - c['rejected without file:line:col']} |\n"
        f"| rejected without a location | {c['rejected without file:line:col']} |\n| tracebacks | {c['traceback']} |\n"
        f"| hangs over 10 s | {c['hang > 10 s']} |\n| slowest single compile | {result['slowest']:.2f} s |\n"
        f"| template sandbox payloads (tests/test_sandbox.py) | {payloads} |\n| payloads executed | {payloads - clean} |\n"
    )
    out = ROOT / "bench" / "ROBUSTNESS.md"
    text = out.read_text() if out.exists() else ""
    marker_start, marker_end = "<!-- robustness.py:start -->", "<!-- robustness.py:end -->"
    block = f"{marker_start}\n{section}{marker_end}"
    if marker_start in text:
        text = text[: text.index(marker_start)] + block + text[text.index(marker_end) + len(marker_end):]
    else:
        text = "# Robustness figures\n\n## Malformed specs and template sandbox\n\n" + block + "\n" + text
    out.write_text(text)


if __name__ == "__main__":
    main()
