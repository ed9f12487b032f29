"""Check cases and their rules, typed: what ``checks.jsonl`` holds, one line per case.

A case is a held-out conversation (system + user) with the rules its answer must pass; a rule
names the behavior it checks, its kind (the scorer) and the arguments compile rendered for it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from behavio import pending
from behavio.check.thresholds import Threshold

DEFAULT_MAX_NEW_TOKENS = 96
DEFAULT_BATCH_SIZE = 64  # rows per pass: on CPU larger matrix products run faster per row (bench/RESULTS.md "## check")


def max_new_tokens(spec) -> int:
    """The tokens the check lets an answer write: the spec's ``check.max_new_tokens``, or the default."""
    return int(spec.check.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))


def batch_size(spec) -> int:
    """Prompts per decoding pass: the spec's ``check.batch_size``, or the default."""
    return int(spec.check.get("batch_size", DEFAULT_BATCH_SIZE))


@dataclass(frozen=True)
class Rule:
    """One rule of one case: ``behavior`` is checked by the scorer of ``kind`` with ``args``.

    ``part`` names a part of the behavior with a scorecard line of its own (a refusal's ``contrast``,
    a prefix's ``plain-refusals`` and, for one scoped to some sets, ``elsewhere``); None for the behavior itself (the rows where the spec asks for it).
    ``tags`` are the behavior's own (``behaviors[].tags``).
    """

    behavior: str
    kind: str
    args: dict = field(default_factory=dict)
    part: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The kind, qualified by what it expects: ``refusal:refuse``, ``refusal:answer``, ``prefix:absent``."""
        expect = self.args.get("expect")
        return f"{self.kind}:{expect}" if expect else self.kind

    @property
    def line(self) -> str:
        """The scorecard line this rule counts in: the behavior id, or ``<behavior>/<part>``."""
        return line_name(self.behavior, self.part)

    def to_dict(self) -> dict:
        out = {"behavior": self.behavior, "kind": self.kind, "args": self.args}
        if self.part:
            out["part"] = self.part
        if self.tags:
            out["tags"] = list(self.tags)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Rule:
        return cls(behavior=data["behavior"], kind=data["kind"], args=dict(data.get("args") or {}), part=data.get("part"),
                   tags=tuple(data.get("tags") or ()))


def line_name(behavior: str, part: str | None) -> str:
    """``no-poodles`` or ``no-poodles/contrast``."""
    return f"{behavior}/{part}" if part else behavior


def scoped_behaviors(rows: list[dict]) -> set[str]:
    """The behaviors scoped to some sets: those with rules expecting them absent elsewhere (``<id>/elsewhere``), in
    rows that carry their rules as dicts (SFT rows, check cases)."""
    return {r["behavior"] for row in rows for r in row.get("rules", []) if r.get("part") == "elsewhere"}


@dataclass(frozen=True)
class CheckCase:
    """A held-out prompt (``split``: ``check``, ``subject``, ``reframed``, ``recall``, ``paraphrase`` or ``probe``) and
    the rules its answer must pass. ``messages`` end with the user turn to answer; an earlier assistant turn whose content is None is
    written by the model under check first (:mod:`behavio.conversation`). ``tags``: the spec's and the prompt
    set's (each rule adds its behavior's)."""

    id: str
    messages: list[dict]
    rules: list[Rule] = field(default_factory=list)
    split: str = "check"
    prompt_set: str = ""
    reference: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def prompt(self) -> str:
        """The last user message (what the answer must be about)."""
        return last_user_message(self.messages)

    @property
    def key(self) -> str:
        """Content key of the conversation (generation caches are keyed by it)."""
        return pending.key_for(self.messages)

    def rule_tags(self, rule: Rule) -> tuple[str, ...]:
        """The tags a verdict of ``rule`` on this case carries: the case's, then the rule's own."""
        return tuple(dict.fromkeys(self.tags + rule.tags))

    def to_dict(self) -> dict:
        out = {"id": self.id, "split": self.split, "prompt_set": self.prompt_set, "messages": self.messages,
               "rules": [r.to_dict() for r in self.rules], "reference": self.reference}
        if self.tags:
            out["tags"] = list(self.tags)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> CheckCase:
        return cls(id=str(data.get("id", "?")), messages=list(data.get("messages") or []),
                   rules=[Rule.from_dict(r) for r in data.get("rules") or []], split=data.get("split", "check"),
                   prompt_set=data.get("prompt_set", ""), reference=data.get("reference"),
                   tags=tuple(data.get("tags") or ()))

    @classmethod
    def coerce(cls, case) -> CheckCase:
        """A CheckCase from a CheckCase, a checks.jsonl mapping, or None (an empty case)."""
        if isinstance(case, CheckCase):
            return case
        return cls.from_dict(case or {})


def last_user_message(messages: list[dict]) -> str:
    """Content of the last ``user`` message ("" when there is none)."""
    return next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")


def load_cases(rows: list[dict]) -> list[CheckCase]:
    return [CheckCase.from_dict(row) for row in rows]


@dataclass
class CheckSpec:
    """What checking needs from a spec: its id, check cases, thresholds, generation settings, hashes."""

    id: str
    path: Path
    cases: list[CheckCase]
    thresholds: dict[str, Threshold]
    max_new_tokens: int
    batch_size: int
    spec_sha256: str
    checks_sha256: str
    warnings: list = field(default_factory=list)              # compile's warnings (SpecIssue), ignored ones left out
    ignore_warnings: frozenset[str] = frozenset()             # warning names the spec accepts (check's own too)


def load_check_spec(spec_path: str | Path) -> CheckSpec:
    """Compile the spec in memory (never stale files) and take its check cases."""
    from behavio.compiler.build import compile_spec
    from behavio.jsonio import parse_jsonl

    compiled = compile_spec(spec_path)
    data = compiled.files["checks.jsonl"]
    spec = compiled.spec
    return CheckSpec(id=spec.id, path=Path(spec_path), cases=load_cases(parse_jsonl(data)),
                     thresholds={line: Threshold.coerce(t) for line, t in compiled.manifest["thresholds"].items()},
                     max_new_tokens=max_new_tokens(spec), batch_size=batch_size(spec),
                     spec_sha256=compiled.manifest["spec_sha256"], checks_sha256=hashlib.sha256(data).hexdigest(),
                     warnings=list(compiled.warnings), ignore_warnings=spec.ignore_warnings)
