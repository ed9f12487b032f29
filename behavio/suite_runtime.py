"""What generated test suites call: load check cases, score a response, fail with a readable diff."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from behavio.rules import score_rule


def load_cases(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def failures(case: dict, response: str, finished: bool = True) -> list[str]:
    """One line per failing rule: ``behavior [kind]: explanation``."""
    out = []
    for rule in case["rules"]:
        result = score_rule(rule["kind"], response, rule["args"], case, finished)
        if not result.passed:
            out.append(f"{rule['behavior']} [{rule['kind']}]: {result.explanation}")
    return out


def assert_case(case: dict, response: str | None, finished: bool = True) -> None:
    """Fail (pytest assertion) with every broken rule, the prompt, and a diff against the reference."""
    if response is None:
        raise AssertionError(f"no response for check case {case['id']}")
    broken = failures(case, response, finished)
    if not broken:
        return
    prompt = next((m["content"] for m in reversed(case["messages"]) if m["role"] == "user"), "")
    lines = [f"check case {case['id']} broke {len(broken)} rule(s):", *(f"  - {b}" for b in broken),
             f"  prompt:   {prompt!r}", f"  response: {response!r}"]
    reference = case.get("reference")
    if reference and "<<behavio:pending:" not in reference:
        diff = difflib.unified_diff(reference.splitlines(), response.splitlines(), "expected", "got", lineterm="", n=1)
        lines += ["  diff against the reference answer:", *("    " + d for d in diff)]
    raise AssertionError("\n".join(lines))
