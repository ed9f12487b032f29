"""Turn prompt rows into examples: system + user messages and the answer the spec demands.

Answer of a row (each step asks the behaviors' kinds, see ``behavio.kinds.base.Kind``):
- a set whose whole answer a behavior gives (a refusal's ``when``) gets one of its texts, nothing else;
- any other set gets a body (a behavior's ``response_template`` where one applies, else the set's
  answer source), preceded by the chosen sentence of every behavior that opens answers there (a prefix).
Model-written bodies are not known at compile time: they are pending markers, filled later.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from behavio import kinds, pending
from behavio.compiler.expand import PromptRow, normalize, read_records
from behavio.compiler.issues import Issues
from behavio.compiler.sandbox import TemplateProblem, render
from behavio.kinds import RowProblem
from behavio.spec.model import Behavior, Spec


@dataclass
class Example:
    """One prompt row with everything the dataset, DPO and check builders need."""

    row: PromptRow
    prompt: list[dict]                  # system (if any) + user
    answer: str                         # the answer the spec demands
    body: str | None                    # the answer without openings (None for refused rows)
    args: dict[str, dict] = field(default_factory=dict)       # behavior id -> its arguments rendered for this row
    openings: dict[str, str] = field(default_factory=dict)    # behavior id -> the sentence it opened the answer with
    refused_by: str | None = None       # behavior whose answer this row gets (a refusal)
    answer_body: str | None = None      # what answering would look like (for refused rows' DPO)

    @property
    def id(self) -> str:
        return self.row.id

    def openers(self, spec: Spec) -> list[tuple[list[str], str]]:
        """(sentences, separator) of every behavior that could open this row's answer, in spec order."""
        found = []
        for b in spec.behaviors:
            if b.id in self.args and (opening := kinds.of(b).openings(b, self.args[b.id])) is not None:
                found.append(opening)
        return found


class Composer:
    """Builds examples for one spec; collects problems into ``issues``."""

    def __init__(self, spec: Spec, issues: Issues):
        self.spec, self.issues = spec, issues
        self.pending: dict[str, list[dict]] = {}
        self.system = self._render(spec.system, spec.vars, ("system",)) if spec.system else None
        self._file_answers: dict[str, dict[str, str]] = {}
        self._refuser = {s: b for b in spec.behaviors for s in kinds.of(b).refused_sets(b)}

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
            try:
                args = kinds.of(b).row_args(b, row, self.spec, self._behavior_renderer(ctx))
            except RowProblem as problem:
                self.issues.add(("behaviors", b.index) + problem.path, problem.message)
                return None
            if args is not None:
                ex.args[b.id] = args
        refuser = self._refuser.get(row.set)
        if refuser is not None:
            ex.refused_by = refuser.id
            ex.answer = _pick(self.spec, row, refuser.id, kinds.of(refuser).whole_answers(refuser, ex.args[refuser.id]))
            if not probe:
                ex.answer_body = self.body(row, prompt, ctx, required=False)
            return ex
        if probe or self.spec.prompts[row.set].holdout:
            return ex
        body = self.body(row, prompt, ctx, required=True)
        if body is None:
            return None
        ex.body = body
        ex.answer = self._open(ex, body)
        return ex

    def _behavior_renderer(self, ctx: dict):
        """``render(text, path)`` for row arguments: a failing template is a RowProblem at ``path``."""
        def render_arg(text: str, path: tuple) -> str:
            try:
                return render(text, ctx)
            except TemplateProblem as exc:
                raise RowProblem(path, str(exc)) from None

        return render_arg

    def _open(self, ex: Example, body: str) -> str:
        """``body`` preceded by the chosen sentence of every behavior that opens answers of this row (spec order)."""
        answer = body
        for b in reversed(self.spec.behaviors):
            if ex.row.set not in self.spec.scope(b) or b.id not in ex.args:
                continue
            opening = kinds.of(b).openings(b, ex.args[b.id])
            if opening is not None:
                sentences, separator = opening
                ex.openings[b.id] = _pick(self.spec, ex.row, b.id, sentences)
                answer = ex.openings[b.id] + separator + answer
        return answer

    def body(self, row: PromptRow, prompt: list[dict], ctx: dict, *, required: bool) -> str | None:
        """The answer body of ``row``: a response template, the answer source, or (refused rows) the model."""
        src = self.spec.answers.get(row.set)
        raw = self._source_body(row, prompt, ctx) if src else None
        if src and raw is None:
            return None
        template = self._response_template(row.set)
        if template is not None:
            behavior, source = template
            tctx = dict(ctx, answer=raw) if raw is not None else ctx
            return self._render(source, tctx, ("behaviors", behavior.index, "response_template"))
        if raw is not None:
            return raw
        if not required:
            return self._model_body(prompt)
        self.issues.add(("prompts", row.set), f"prompt set {row.set!r} has no answers: add answers.{row.set} "
                        "(source: model, literal, file or field) or a structure behavior with a response_template")
        return None

    def _response_template(self, name: str) -> tuple[Behavior, str] | None:
        for b in self.spec.behaviors:
            source = kinds.of(b).response_template(b)
            if source and name in self.spec.scope(b):
                return b, source
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
        key = pending.key_for(prompt)
        self.pending.setdefault(key, prompt)
        return pending.marker(key)


def _pick(spec: Spec, row: PromptRow, salt: str, options: list[str]) -> str:
    """Deterministic choice (independent of PYTHONHASHSEED): str seeds are hashed with SHA-512."""
    return random.Random(f"{spec.split.seed}:{row.id}:{salt}").choice(options)
