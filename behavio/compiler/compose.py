"""Turn prompt rows into examples: system + user messages and the answer the spec demands.

Answer of a row (each step asks the behaviors' kinds, see ``behavio.kinds.base.Kind``):
- a set whose whole answer a behavior gives (a refusal's ``when``) gets one of its texts, nothing else;
- any other set gets a body (a behavior's ``response_template`` where one applies, else the set's
  answer source), preceded by the chosen sentence of every behavior that opens answers there (a prefix).
Model-written bodies are not known at compile time: they are pending markers, filled later.

A row of a conversation set answers its last user turn after the turns before it. For training, an earlier
assistant turn is its given text, or a pending marker the base model fills (``judge: last``), or the answer
the behaviors compose for that turn (``judge: each``, where every turn is also an example of its own). For
checks (``Example.check_prompt``), the turns the spec does not give are open (content None): the model
under check writes them when the case is replayed (:mod:`behavio.conversation`).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from behavio import kinds, pending
from behavio.compiler.datafiles import read_records
from behavio.compiler.expand import PromptRow, normalize
from behavio.compiler.issues import Issues
from behavio.compiler.sandbox import TemplateProblem, render
from behavio.errors import did_you_mean
from behavio.kinds import RowProblem
from behavio.spec.model import Behavior, Spec


ID_HASH = 10  # hex digits of the content hash in ids (40 bits: no collision among a set's prompts)
TURN_STRIDE = 10_007  # an earlier turn's row index (judge: each): another place in the cycles of DPO violations
_SOURCE = object()  # compose(): the body comes from the set's answer source


@dataclass
class Example:
    """One prompt row with everything the dataset, DPO and check builders need."""

    row: PromptRow
    prompt: list[dict]                  # system (if any) + user
    answer: str                         # the answer the spec demands
    body: str | None                    # the answer without openings (None for refused rows)
    args: dict[str, dict] = field(default_factory=dict)       # behavior id -> its arguments rendered for this row
    openings: dict[str, str] = field(default_factory=dict)    # behavior id -> the sentence it opened (or closed) the answer with
    refused_by: str | None = None       # behavior whose answer this row gets (a refusal)
    answer_body: str | None = None      # what answering would look like (for refused rows' DPO)
    sources: dict[str, tuple] = field(default_factory=dict)   # "body" or behavior id -> spec key path that wrote it
    source_note: str = ""               # where in a data file the body came from ("answers.jsonl:12")
    unshaped: dict[str, str] = field(default_factory=dict)    # behavior id -> the body without that behavior's shape
    check_prompt: list[dict] | None = None  # a conversation as a check case replays it (open turns: content None)

    def asked_as(self, text: str, **row_changes) -> Example:
        """This example with its last user turn written ``text`` (an augmented or respelled copy), the same answer."""
        row = dataclasses.replace(self.row, prompt=text, **row_changes)
        return dataclasses.replace(self, row=row, prompt=self.prompt[:-1] + [{"role": "user", "content": text}])

    @property
    def id(self) -> str:
        """``<prompt set>/<hash of the rendered messages>``: the same prompt keeps its id whatever else changes."""
        return f"{self.row.set}/{pending.key_for(self.prompt)[:ID_HASH]}"

    def fixed_sentences(self, spec: Spec) -> list[str]:
        """Every sentence a behavior in scope could open or close this row's answer with (all of its choices)."""
        found: list[str] = []
        for b in spec.behaviors:
            if self.row.set in spec.scope(b) and b.id in self.args:
                kind, args = kinds.of(b), self.args[b.id]
                for ends in (kind.openings(b, args), kind.closings(b, args)):
                    found += ends[0] if ends is not None else []
        return found

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
        self.pending: dict[str, dict] = {}  # key -> {"messages", "shape"?}: bodies the base model writes
        self._context_keys: set[str] = set()  # bodies written as earlier turns of conversations (kept unshaped)
        self.system = self._render(spec.system, spec.vars, ("system",)) if spec.system else None
        self._file_answers: dict[str, dict[str, str]] = {}
        self._refuser = {s: b for b in spec.behaviors for s in kinds.of(b).refused_sets(b)}

    def _render(self, source: str, ctx: dict, where: tuple) -> str | None:
        try:
            return render(source, ctx)
        except TemplateProblem as exc:
            self.issues.add(where, str(exc))
            return None

    def system_messages(self) -> list[dict]:
        return [{"role": "system", "content": self.system}] if self.system else []

    def prompt_messages(self, text: str, history: list[dict] | None = None) -> list[dict]:
        """System (if any), the conversation so far, and the user turn ``text``."""
        return self.system_messages() + list(history or []) + [{"role": "user", "content": text}]

    def context(self, row: PromptRow) -> dict:
        return {**self.spec.vars, "prompt": row.prompt, "row": row.fields}

    def compose_all(self, row: PromptRow, *, probe: bool = False) -> list[Example]:
        """The examples of one row: the row itself; with ``judge: each``, one per user turn of its conversation,
        each answer composed by the behaviors and the conversation before it made of the earlier ones."""
        if not row.history or self.spec.prompts[row.set].judge != "each":
            ex = self.compose(row, probe=probe)
            return [] if ex is None else [ex]
        out: list[Example] = []
        history: list[dict] = []
        for k in range(0, len(row.history), 2):
            (_, user), (_, given) = row.history[k], row.history[k + 1]
            cut = dataclasses.replace(row, prompt=user, history=row.history[:k], index=row.index + (k // 2 + 1) * TURN_STRIDE)
            ex = self.compose(cut, probe=probe, history=history, given=given)
            if ex is None:
                return []
            out.append(ex)
            history = history + [{"role": "user", "content": user}, {"role": "assistant", "content": ex.answer}]
        ex = self.compose(row, probe=probe, history=history)
        return [] if ex is None else out + [ex]

    def _history(self, row: PromptRow) -> list[dict]:
        """The turns before ``row``'s prompt for training (``judge: last``): given texts, and markers of the
        answers the base model writes to the conversation so far."""
        system, history = self.system_messages(), []
        for role, text in row.history:
            if text is None:
                text = self._model_body(system + history)
                self._context_keys.add(pending.keys_in(text)[0])
            history.append({"role": role, "content": text})
        return history

    def _check_history(self, row: PromptRow) -> list[dict]:
        """The turns before ``row``'s prompt as a check case replays them: given texts (``judge: last``); every
        assistant turn the spec does not give is open (content None), written by the model under check."""
        each = self.spec.prompts[row.set].judge == "each"
        return [{"role": role, "content": None if role == "assistant" and (each or text is None) else text}
                for role, text in row.history]

    def compose(self, row: PromptRow, *, probe: bool = False, history: list[dict] | None = None,
                given=_SOURCE) -> Example | None:
        """The example of one row (of one turn of a conversation: ``history`` the composed turns before it,
        ``given`` its body when it is not the last turn: a text, or None for one the base model writes)."""
        check_prompt = self.prompt_messages(row.prompt, self._check_history(row)) if row.history else None
        if probe and check_prompt is not None:
            prompt = check_prompt
        else:
            prompt = self.prompt_messages(row.prompt, self._history(row) if history is None else history)
        ctx = self.context(row)
        ex = Example(row=row, prompt=prompt, answer="", body=None, check_prompt=check_prompt)
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
            ex.sources[refuser.id] = ("behaviors", refuser.index, "responses")
            ex.answer = _pick(self.spec, ex.id, refuser.id, kinds.of(refuser).whole_answers(refuser, ex.args[refuser.id]))
            if not probe:
                ex.answer_body = self.body(row, prompt, ctx, required=False)
            return ex
        if probe or self.spec.prompts[row.set].holdout:
            return ex
        if given is _SOURCE:
            body = self.body(row, prompt, ctx, required=True, example=ex)
        else:
            body = given if given is not None else self._model_body(prompt)
            ex.sources["body"] = ("prompts", row.set)
        if body is None:
            return None
        ex.body = self._shape(ex, prompt, body)
        ex.answer = self._close(ex, self._open(ex, ex.body))
        return ex

    def _shape(self, ex: Example, prompt: list[dict], body: str) -> str:
        """``body`` in the form the behaviors in scope ask for (``Kind.shape_body``); ``ex.unshaped`` keeps it without
        each one's shape (for DPO rejections). A body the base model will write is shaped after the fill: its
        pending entry records the shapes (``pending.jsonl`` ``shape``)."""
        name = ex.row.set
        shapers = [b for b in self.spec.behaviors if name in self.spec.scope(b) and kinds.of(b).shapes_body]
        if not shapers:
            return body
        if pending.has_marker(body):
            plain = pending.key_for(prompt)
            if body != pending.marker(plain):  # a marker inside a response template: left as written
                return body
            if plain not in self._context_keys:  # an earlier turn of a conversation still needs it unshaped
                self.pending.pop(plain, None)  # filled in its shaped form instead
            shape = [{"behavior": b.id, "kind": b.kind, "args": dict(b.raw)} for b in shapers]
            return self._model_body(prompt, shape)
        for skipped in shapers:
            ex.unshaped[skipped.id] = _shaped(body, [b for b in shapers if b is not skipped])
        return _shaped(body, shapers)

    def variant(self, marker: str, entry: dict) -> str:
        """The marker of a pending body with one more shape entry (a violation applied after the fill)."""
        (key,) = pending.keys_in(marker)
        base = self.pending[key]
        shape = list(base.get("shape", [])) + [entry]
        return self._model_body(base["messages"], shape)

    def _behavior_renderer(self, ctx: dict):
        """``render(text, path)`` for row arguments: a failing template is a RowProblem at ``path``."""
        def render_arg(text: str, path: tuple) -> str:
            try:
                return render(text, ctx)
            except TemplateProblem as exc:
                raise RowProblem(path, str(exc)) from None

        return render_arg

    def _open(self, ex: Example, body: str) -> str:
        """``body`` preceded by the chosen sentence of every behavior that opens answers of this row."""
        return self._add_sentences(ex, body, lambda kind, b, args: kind.openings(b, args), at_start=True)

    def _close(self, ex: Example, answer: str) -> str:
        """``answer`` followed by the chosen sentence of every behavior that closes answers of this row."""
        return self._add_sentences(ex, answer, lambda kind, b, args: kind.closings(b, args), at_start=False)

    def _add_sentences(self, ex: Example, text: str, sentences_of, *, at_start: bool) -> str:
        """``text`` with one chosen sentence of each behavior in scope that has some (spec order, outermost first)."""
        behaviors = reversed(self.spec.behaviors) if at_start else self.spec.behaviors
        for b in behaviors:
            if ex.row.set not in self.spec.scope(b) or b.id not in ex.args:
                continue
            found = sentences_of(kinds.of(b), b, ex.args[b.id])
            if found is not None:
                sentences, separator = found
                ex.openings[b.id] = _pick(self.spec, ex.id, b.id, sentences)
                ex.sources[b.id] = ("behaviors", b.index)
                text = ex.openings[b.id] + separator + text if at_start else text + separator + ex.openings[b.id]
        return text

    def body(self, row: PromptRow, prompt: list[dict], ctx: dict, *, required: bool,
             example: Example | None = None) -> str | None:
        """The answer body of ``row``: a response template, the answer source, or (refused rows) the model.
        ``example`` records which spec key wrote it (for compile's proof of its own data)."""
        ex = example or Example(row=row, prompt=prompt, answer="", body=None)
        src = self.spec.answers.get(row.set)
        raw = self._source_body(row, prompt, ctx, ex) if src else None
        if src and raw is None:
            return None
        template = self._response_template(row.set)
        if template is not None:
            behavior, source = template
            tctx = dict(ctx, answer=raw) if raw is not None else ctx
            ex.sources["body"] = ("behaviors", behavior.index, "response_template")
            return self._render(source, tctx, ex.sources["body"])
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
    def _source_body(self, row: PromptRow, prompt: list[dict], ctx: dict, ex: Example) -> str | None:
        src = self.spec.answers[row.set]
        where = ("answers", row.set)
        if src.source == "model":
            return self._model_body(prompt)
        if src.source == "literal":
            if src.template is not None:
                ex.sources["body"] = where + ("template",)
                return self._render(src.template, ctx, ex.sources["body"])
            n = len(src.items)
            if row.index >= n:
                self.issues.add(where + ("items",), f"{n} items for prompt set {row.set!r}, which has more prompts; give one per prompt (or a template)")
                return None
            ex.sources["body"] = where + ("items", row.index)
            return self._render(src.items[row.index], ctx, ex.sources["body"])
        if src.source == "field":
            value = row.fields.get(src.answer_field)
            if not isinstance(value, str):
                columns = [k for k, v in row.fields.items() if isinstance(v, str)]
                self.issues.add(where + ("answer_field",), f"prompts.{row.set} rows have no text column {src.answer_field!r}"
                                f"{did_you_mean(src.answer_field, columns)}; columns: {', '.join(columns)}")
                return None
            ex.sources["body"] = where + ("answer_field",)
            ex.source_note = f"row {row.index + 1} of {self.spec.prompts[row.set].file}"
            return value
        table = self._answers_file(row.set)
        found = table.get(normalize(row.prompt))
        if found is None:
            if table:
                self.issues.add(where + ("path",), f"{src.path} has no answer for prompt {row.prompt[:60]!r}")
            return None
        ex.sources["body"] = where + ("path",)
        ex.source_note = f"{src.path}:{found[1]}"
        return found[0]

    def _answers_file(self, name: str) -> dict[str, tuple[str, int]]:
        """normalized prompt -> (answer, line) of a ``source: file`` answers file; empty after a reported problem."""
        if name not in self._file_answers:
            src = self.spec.answers[name]
            where = ("answers", name, "path")
            table: dict[str, tuple[str, int]] = {}
            for rec in read_records(self.spec.path.parent / src.path, self.issues, where):
                p, a = rec.fields.get(src.prompt_field), rec.fields.get(src.answer_field)
                if not isinstance(p, str) or not isinstance(a, str):
                    missing = [k for k, v in ((src.prompt_field, p), (src.answer_field, a)) if not isinstance(v, str)]
                    key = ("prompt_field",) if missing[0] == src.prompt_field else ("answer_field",)
                    self.issues.add(("answers", name) + key, f"{src.path}:{rec.line} has no text column {missing[0]!r}"
                                    f"{did_you_mean(missing[0], list(rec.fields))}; columns: {', '.join(rec.fields)}")
                    table = {}
                    break
                table.setdefault(normalize(p), (a, rec.line))
            self._file_answers[name] = table
        return self._file_answers[name]

    def _model_body(self, prompt: list[dict], shape: list[dict] | None = None) -> str:
        """The marker of a body the base model writes for ``prompt`` (put in ``shape``'s form after the fill)."""
        key = pending.key_for(prompt + [{"shape": shape}] if shape else prompt)
        self.pending.setdefault(key, {"messages": prompt, **({"shape": shape} if shape else {})})
        return pending.marker(key)


def _shaped(body: str, shapers: list[Behavior]) -> str:
    for b in shapers:
        body = kinds.of(b).shape_body(b, body)
    return body



def _pick(spec: Spec, example_id: str, salt: str, options: list[str]) -> str:
    """Deterministic choice (independent of PYTHONHASHSEED): str seeds are hashed with SHA-512."""
    return random.Random(f"{spec.split.seed}:{example_id}:{salt}").choice(options)
