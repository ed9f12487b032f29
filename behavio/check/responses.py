"""Responses to check cases: read from a JSONL file or produced by a model, looked up per case."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from behavio.check.cases import CheckCase
from behavio.compiler.expand import normalize
from behavio.errors import BehavioError


@dataclass
class Responses:
    """Responses keyed by check case id; ``finished`` is False where generation hit the token limit."""

    by_id: dict[str, str] = field(default_factory=dict)
    by_prompt: dict[str, str] = field(default_factory=dict)
    unfinished: set[str] = field(default_factory=set)

    def response_for(self, case: CheckCase) -> str | None:
        if case.id in self.by_id:
            return self.by_id[case.id]
        return self.by_prompt.get(normalize(case.prompt))

    def finished(self, case: CheckCase) -> bool:
        return case.id not in self.unfinished and f"prompt:{normalize(case.prompt)}" not in self.unfinished

    @classmethod
    def from_generations(cls, cases: list[CheckCase], generations: list) -> "Responses":
        """Responses from ``generations`` (``.text``, ``.finished``), one per case in the same order."""
        out = cls()
        for case, gen in zip(cases, generations, strict=True):
            out.by_id[case.id] = gen.text
            if not gen.finished:
                out.unfinished.add(case.id)
        return out


def read_responses(path: str | Path, cases: list[CheckCase]) -> Responses:
    """Read ``{"id", "response"}`` or ``{"prompt", "response"}`` rows; every problem named with file:line.

    A row with an id may also carry the ``prompt`` it answered: it must be the case's prompt (so a
    responses file written for another version of the spec cannot be scored against different
    prompts). Two rows for the same case are an error naming both lines.
    """
    path = Path(path)
    if not path.is_file():
        raise BehavioError(f"{path}: responses file not found")
    by_id = {c.id: c for c in cases}
    prompts = {normalize(c.prompt) for c in cases}
    out = Responses()
    problems: list[str] = []
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path}:{lineno}: not valid JSON ({exc.msg})")
                continue
            problem = _read_row(row, by_id, prompts, out)
            key = _row_key(row)
            if problem is None and key in first_line:
                problem = f"a second response for {key} (the first is on line {first_line[key]})"
            if problem is not None:
                problems.append(f"{path}:{lineno}: {problem}")
                continue
            first_line[key] = lineno
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise BehavioError("\n".join(problems[:5]) + more)
    return out


def _row_key(row) -> str:
    if isinstance(row, dict) and isinstance(row.get("id"), str):
        return f"case {row['id']!r}"
    return f"prompt {normalize(str(row.get('prompt', '')))[:60]!r}" if isinstance(row, dict) else ""


def _read_row(row, by_id: dict[str, CheckCase], prompts: set[str], out: Responses) -> str | None:
    """Store one row's response in ``out``; the problem with it, if any."""
    if not isinstance(row, dict) or not isinstance(row.get("response"), str):
        return "expected an object with a string \"response\""
    if isinstance(row.get("id"), str):
        case = by_id.get(row["id"])
        if case is None:
            return f"unknown check case id {row['id']!r}"
        if isinstance(row.get("prompt"), str) and normalize(row["prompt"]) != normalize(case.prompt):
            return (f"case {case.id!r} asks {case.prompt[:60]!r}, but this row answers {row['prompt'][:60]!r} "
                    "(a responses file for another version of the spec?)")
        if row["id"] in out.by_id:
            return None  # reported as a second response by the caller
        out.by_id[row["id"]] = row["response"]
        key = row["id"]
    elif isinstance(row.get("prompt"), str):
        if normalize(row["prompt"]) not in prompts:
            return f"no check case has the prompt {row['prompt'][:60]!r}"
        out.by_prompt.setdefault(normalize(row["prompt"]), row["response"])
        key = f"prompt:{normalize(row['prompt'])}"
    else:
        return "needs \"id\" (a check case id) or \"prompt\""
    if row.get("finished") is False:
        out.unfinished.add(key)
    return None
