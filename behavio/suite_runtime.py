"""What generated test suites call: load check cases, score a response, fail with a readable diff."""

from __future__ import annotations

import difflib
from pathlib import Path

from behavio import pending
from behavio.check.cases import CheckCase, load_cases as typed_cases
from behavio.jsonio import read_jsonl


def load_cases(path: Path) -> list[CheckCase]:
    """The check cases of a compiled ``checks.jsonl``."""
    return typed_cases(read_jsonl(path))


def failures(case: CheckCase, response: str, finished: bool = True) -> list[str]:
    """One line per failing rule: ``line [rule]: explanation`` (scored exactly as ``behavio check`` scores it)."""
    from behavio.check.scoring import score_case

    result = score_case(case, response, finished)
    return [f"{v.line} [{v.rule}]: {v.explanation}" for v in result.failed]


def assert_case(case: CheckCase, response: str | None, finished: bool = True) -> None:
    """Fail (pytest assertion) with every broken rule, the prompt, and a diff against the reference."""
    if response is None:
        raise AssertionError(f"no response for check case {case.id}")
    broken = failures(case, response, finished)
    if not broken:
        return
    lines = [f"check case {case.id} broke {len(broken)} rule(s):", *(f"  - {b}" for b in broken),
             f"  prompt:   {case.prompt!r}", f"  response: {response!r}"]
    reference = case.reference
    if reference and not pending.has_marker(reference):
        diff = difflib.unified_diff(reference.splitlines(), response.splitlines(), "expected", "got", lineterm="", n=1)
        lines += ["  diff against the reference answer:", *("    " + d for d in diff)]
    raise AssertionError("\n".join(lines))
