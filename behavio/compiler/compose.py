"""Turn prompt rows into examples: system + user messages and the answer the spec demands.

Answer of a row:
- a prompt set refused by a refusal behavior gets one of its fixed refusal texts, nothing else;
- any other set gets a body (a structure behavior's `response_template`, else its answer
  source), preceded by the chosen sentence of every prefix behavior that applies.
Model-written bodies are not known at compile time: they are pending markers, filled later.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field

from behavio.compiler.expand import PromptRow, normalize, read_records
from behavio.compiler.issues import Issues
from behavio.compiler.sandbox import TemplateProblem, render
from behavio.spec.model import ASSERTION_KINDS, Behavior, Spec

PENDING_PREFIX = "<<behavio:pending:"
PENDING_SUFFIX = ">>"


def pending_marker(key: str) -> str:
    return f"{PENDING_PREFIX}{key}{PENDING_SUFFIX}"


def pending_key(messages: list[dict]) -> str:
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class Example:
    """One prompt row with everything the dataset, DPO and check builders need."""

    row: PromptRow
    prompt: list[dict]                  # system (if any) + user
    answer: str                         # the answer the spec demands
    body: str | None                    # the answer without prefix (None for refused rows)
    prefixes: dict[str, str] = field(default_factory=dict)          # prefix behavior id -> chosen sentence
    choices: dict[str, list[str]] = field(default_factory=dict)     # prefix behavior id -> rendered choices
    refusals: dict[str, list[str]] = field(default_factory=dict)    # refusal behavior id -> rendered texts
    refused_by: str | None = None       # refusal behavior that refuses this row
    assertions: dict[str, dict] = field(default_factory=dict)       # assertion behavior id -> args rendered for this row
    answer_body: str | None = None      # what answering would look like (for refused rows' DPO)

    @property
    def id(self) -> str:
        return self.row.id


class Composer:
    """Builds examples for one spec; collects problems into ``issues``."""

    def __init__(self, spec: Spec, issues: Issues):
        self.spec, self.issues = spec, issues
        self.pending: dict[str, list[dict]] = {}
        self.system = self._render(spec.system, spec.vars, ("system",)) if spec.system else None
        self._file_answers: dict[str, dict[str, str]] = {}
        self._refusal_of = {s: b for b in spec.behaviors if b.kind == "refusal" for s in b.sets("when")}

    def _render(self, source: str, ctx: dict, where: tuple) -> str | None:
        try:
            return render(source, ctx)
        except TemplateProblem as exc:
            self.issues.add(where, str(exc))
            return None

    def prompt_messages(self, text: str) -> list[dict]:
        user = {"role": "user", "content": text}
        return [{"role": "system", "content": self.system}, user] if self.system else [user]

    def context(self, row: PromptRow) -> dict:
        return {**self.spec.vars, "prompt": row.prompt, "row": row.fields}

    def compose(self, row: PromptRow, *, probe: bool = False) -> Example | None:
        prompt = self.prompt_messages(row.prompt)
        ctx = self.context(row)
        ex = Example(row=row, prompt=prompt, answer="", body=None)
        for b in self.spec.behaviors:
            if b.kind == "refusal" and (row.set in b.sets("when") or row.set in b.sets("contrast")):
                texts = [self._render(t, ctx, ("behaviors", b.index, "responses", i)) for i, t in enumerate(b.get("responses"))]
                if None in texts:
                    return None
                ex.refusals[b.id] = texts
            if b.kind in ASSERTION_KINDS and row.set in self.spec.scope(b):
                args = {}
                for key in ("text", "pattern"):
                    if b.get(key) is not None:
                        args[key] = self._render(b.get(key), ctx, ("behaviors", b.index, key))
                        if args[key] is None:
                            return None
                if b.kind == "regex" and not _valid_regex(args["pattern"]):
                    self.issues.add(("behaviors", b.index, "pattern"), f"pattern for row {row.id} is not a valid regular expression: {args['pattern'][:80]!r}")
                    return None
                ex.assertions[b.id] = args
            if b.kind == "prefix" and (row.set in self.spec.scope(b) or row.set in self._refusal_of):
                choices = [self._render(t, ctx, ("behaviors", b.index, "choices", i)) for i, t in enumerate(b.get("choices"))]
                if None in choices:
                    return None
                ex.choices[b.id] = choices
        refusal = self._refusal_of.get(row.set)
        if refusal is not None:
            ex.refused_by = refusal.id
            ex.answer = _pick(self.spec, row, refusal.id, ex.refusals[refusal.id])
            if not probe:
                ex.answer_body = self.body(row, prompt, ctx, required=False)
            return ex
        if probe or self.spec.prompts[row.set].holdout:
            return ex
        body = self.body(row, prompt, ctx, required=True)
        if body is None:
            return None
        ex.body = body
        answer = body
        for b in reversed([b for b in self.spec.behaviors if b.kind == "prefix" and row.set in self.spec.scope(b)]):
            sentence = _pick(self.spec, row, b.id, ex.choices[b.id])
            ex.prefixes[b.id] = sentence
            answer = sentence + b.get("separator", " ") + answer
        ex.answer = answer
        return ex

    def body(self, row: PromptRow, prompt: list[dict], ctx: dict, *, required: bool) -> str | None:
        """The answer body of ``row``: response template, answer source, or (refused rows) the model."""
        src = self.spec.answers.get(row.set)
        raw = self._source_body(row, prompt, ctx) if src else None
        if src and raw is None:
            return None
        template = next((b for b in self.spec.behaviors if b.kind == "structure" and b.get("response_template")
                         and row.set in self.spec.scope(b)), None)
        if template is not None:
            tctx = dict(ctx, answer=raw) if raw is not None else ctx
            return self._render(template.get("response_template"), tctx, ("behaviors", template.index, "response_template"))
        if raw is not None:
            return raw
        if not required:
            return self._model_body(prompt)
        self.issues.add(("prompts", row.set), f"prompt set {row.set!r} has no answers: add answers.{row.set} "
                        "(source: model, literal, file or field) or a structure behavior with a response_template")
        return None

    def _source_body(self, row: PromptRow, prompt: list[dict], ctx: dict) -> str | None:
        src = self.spec.answers[row.set]
        where = ("answers", row.set)
        if src.source == "model":
            return self._model_body(prompt)
        if src.source == "literal":
            if src.template is not None:
                return self._render(src.template, ctx, where + ("template",))
            n = len(src.items)
            if row.index >= n:
                self.issues.add(where + ("items",), f"{n} items for prompt set {row.set!r}, which has more prompts; give one per prompt (or a template)")
                return None
            return self._render(src.items[row.index], ctx, where + ("items", row.index))
        if src.source == "field":
            value = row.fields.get(src.answer_field)
            if not isinstance(value, str):
                self.issues.add(where + ("answer_field",), f"row {row.index + 1} of prompts.{row.set} has no text column {src.answer_field!r}")
                return None
            return value
        table = self._answers_file(row.set)
        value = table.get(normalize(row.prompt))
        if value is None:
            self.issues.add(where + ("path",), f"{src.path} has no answer for prompt {row.prompt[:60]!r}")
        return value

    def _answers_file(self, name: str) -> dict[str, str]:
        if name not in self._file_answers:
            src = self.spec.answers[name]
            where = ("answers", name, "path")
            table = {}
            for i, rec in enumerate(read_records(self.spec.path.parent / src.path, self.issues, where)):
                p, a = rec.get(src.prompt_field), rec.get(src.answer_field)
                if not isinstance(p, str) or not isinstance(a, str):
                    self.issues.add(where, f"row {i + 1} of {src.path} lacks text columns {src.prompt_field!r} and {src.answer_field!r}")
                    break
                table.setdefault(normalize(p), a)
            self._file_answers[name] = table
        return self._file_answers[name]

    def _model_body(self, prompt: list[dict]) -> str:
        key = pending_key(prompt)
        self.pending.setdefault(key, prompt)
        return pending_marker(key)


def _pick(spec: Spec, row: PromptRow, salt: str, options: list[str]) -> str:
    """Deterministic choice (independent of PYTHONHASHSEED): str seeds are hashed with SHA-512."""
    return random.Random(f"{spec.split.seed}:{row.id}:{salt}").choice(options)


def _valid_regex(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def prefix_behaviors(spec: Spec) -> list[Behavior]:
    return [b for b in spec.behaviors if b.kind == "prefix"]
