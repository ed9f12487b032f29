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
    """Read ``{"id", "response"}`` or ``{"prompt", "response"}`` rows; every problem named with file:line."""
    path = Path(path)
    if not path.is_file():
        raise BehavioError(f"{path}: responses file not found")
    known = {c.id for c in cases}
    prompts = {normalize(c.prompt) for c in cases}
    out = Responses()
    problems = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path}:{lineno}: not valid JSON ({exc.msg})")
                continue
            if not isinstance(row, dict) or not isinstance(row.get("response"), str):
                problems.append(f"{path}:{lineno}: expected an object with a string \"response\"")
                continue
            if isinstance(row.get("id"), str):
                if row["id"] not in known:
                    problems.append(f"{path}:{lineno}: unknown check case id {row['id']!r}")
                    continue
                out.by_id[row["id"]] = row["response"]
            elif isinstance(row.get("prompt"), str):
                if normalize(row["prompt"]) not in prompts:
                    problems.append(f"{path}:{lineno}: no check case has the prompt {row['prompt'][:60]!r}")
                    continue
                out.by_prompt[normalize(row["prompt"])] = row["response"]
            else:
                problems.append(f"{path}:{lineno}: needs \"id\" (a check case id) or \"prompt\"")
                continue
            if row.get("finished") is False:
                out.unfinished.add(row["id"] if isinstance(row.get("id"), str) else f"prompt:{normalize(row['prompt'])}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise BehavioError("\n".join(problems[:5]) + more)
    return out
