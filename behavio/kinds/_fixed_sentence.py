"""What ``prefix``, ``sign_off`` and ``header`` share: one sentence of a fixed set opens (or closes) every answer in scope.

A choice matches when the normalized response (whitespace, curly quotes, case) starts (ends) with the
normalized choice, at a word boundary. A paraphrase of a choice does not match. The rule expects the
sentence on the rows in scope; a kind whose sentence goes on every answered set also expects it to be
absent on the rows another behavior refuses (refusals stay plain), on the line ``<id>/plain-refusals``;
one scoped to some sets (``applies_to``) expects it absent on the answered rows outside them, on the line
``<id>/elsewhere`` ("Thanks for your billing question." on a DNS question is as wrong as a missing one on
a billing question; a scorecard that only looks in scope calls a model that says it everywhere perfect).
A choice that renders from ``row`` and cannot render for another set's row is not checked there.
DPO, alternating over a set's rows: the sentence dropped, and a near-miss paraphrase of it (``paraphrases``,
never one of the choices); outside the scope, the sentence added to an answer that must not have it.
"""

from __future__ import annotations

from typing import Callable, ClassVar

from behavio.errors import BehavioError
from behavio.kinds import base
from behavio.kinds._text import excerpt
from behavio.kinds.base import Kind, RowProblem, RuleResult


def keys_for(kind: str, choices: str, separator: str) -> dict:
    """The behavior keys of one fixed-sentence kind, each described for that kind alone (the spec reference
    shows a kind its own defaults; the schema joins the three descriptions)."""
    return {
        "choices": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                    "description": f"{kind}: {choices}"},
        "paraphrases": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                        "description": "prefix / sign_off / header: near-miss sentences used as DPO rejections "
                                       "(default: built-in list)."},
        "separator": {"type": "string", "description": f"{kind}: {separator}"},
    }


class FixedSentence(Kind):
    """A sentence from ``choices`` at one end of the answer; subclasses say which end and how it matches."""

    at_start: ClassVar[bool] = True
    what: ClassVar[str] = "prefix"                         # how messages name the sentence
    plural: ClassVar[str] = "prefixes"
    unit: ClassVar[str] = "sentence"                       # what the failure message quotes of the answer
    default_paraphrases: ClassVar[list[str]] = []
    required = ("choices",)
    teaches = True
    parts = {"plain-refusals": "refused prompts answered with the plain refusal, without the sentence",
             "elsewhere": "answered prompts outside applies_to, without the sentence"}

    def matches(self, response: str, choice: str) -> bool:
        raise NotImplementedError

    def shown_end(self, response: str) -> str:
        """The part of the response a failure message quotes (its first or last sentence)."""
        raise NotImplementedError

    @property
    def dropped(self) -> str:
        return f"{self.name}_dropped"

    @property
    def paraphrased(self) -> str:
        return f"{self.name}_paraphrased"

    @property
    def leaked(self) -> str:
        return f"{self.name}_leaked"

    def guards_refusals(self, behavior, spec) -> bool:
        """A sentence on every answered set (held-out sets aside) could be learned as "always say it", so
        refusals are taught and checked to stay plain; a sentence scoped to some sets is not."""
        trained = {name for name in spec.answered_sets() if not spec.prompts[name].holdout}
        return bool(spec.refused_sets()) and trained <= set(spec.scope(behavior))

    def problems(self, behavior, spec):
        for name in behavior.sets("applies_to"):
            if name in spec.refused_sets():
                yield ("applies_to",), (f"prompt set {name!r} is refused by another behavior: its answer is the plain "
                                        f"refusal, which a {self.what} cannot go on; take it out of applies_to")

    def row_args(self, behavior, row, spec, render):
        refused = row.set in spec.refused_sets()
        if row.set in spec.scope(behavior) or (refused and self.guards_refusals(behavior, spec)):
            return {"choices": self._choices(behavior, render)}
        if refused:
            return None
        try:  # an answered row outside the scope: checked for the sentence's absence (``elsewhere``)
            return {"choices": self._choices(behavior, render)}
        except RowProblem:  # a choice written for its own sets' rows (``{{ row.subject }}``) has no text here
            return None

    @staticmethod
    def _choices(behavior, render) -> list[str]:
        return [render(text, ("choices", i)) for i, text in enumerate(behavior.get("choices"))]

    def _sentences(self, behavior, args: dict):
        return args["choices"], self.arg(behavior, "separator")

    def rules(self, behavior, example, spec) -> list:
        if behavior.id not in example.args:
            return []
        choices = example.args[behavior.id]["choices"]
        if example.refused_by is not None:
            return [base.rule(behavior, self.name, part="plain-refusals", expect="absent", choices=choices)]
        if example.row.set not in spec.scope(behavior):
            return [base.rule(behavior, self.name, part="elsewhere", expect="absent", choices=choices)]
        return [base.rule(behavior, self.name, expect="present", choices=choices)]

    def violations(self, behavior, example, ctx):
        if example.refused_by is not None or example.body is None or behavior.id not in example.args:
            return
        if example.row.set not in ctx.spec.scope(behavior):
            yield from self._leak(behavior, example, ctx)
            return
        sentence, separator = example.openings[behavior.id], self.arg(behavior, "separator")
        choices = set(example.args[behavior.id]["choices"])
        options = [p for p in (behavior.get("paraphrases") or self.default_paraphrases) if p not in choices]
        derivable = [v for v in (self.dropped, self.paraphrased) if ctx.allows(v) and (v == self.dropped or options)]
        if not derivable:
            return
        violation = derivable[ctx.index % len(derivable)]
        joined = sentence + separator if self.at_start else separator + sentence
        if violation == self.dropped:
            yield violation, _replace_once(example.answer, joined, "", self.at_start)
        else:
            yield violation, _replace_once(example.answer, sentence, options[ctx.index % len(options)], self.at_start)

    def _leak(self, behavior, example, ctx):
        """The answer of a row outside the scope with one of the choices added where the kind puts it."""
        if not ctx.allows(self.leaked):
            return
        choices, separator = example.args[behavior.id]["choices"], self.arg(behavior, "separator")
        sentence = choices[ctx.index % len(choices)]
        yield self.leaked, sentence + separator + example.answer if self.at_start else example.answer + separator + sentence

    def score(self, response: str, args: dict, case, finished: bool) -> RuleResult:
        """expect=present: the response has one of ``choices`` at its end; expect=absent: none of them."""
        expect = args.get("expect", "present")
        choices = list(args.get("choices") or [])
        if expect not in ("present", "absent"):
            raise BehavioError(f"{self.name} rule: expect={expect!r}; expected 'present' or 'absent'")
        if not choices:
            raise BehavioError(f"{self.name} rule: 'choices' must be a non-empty list of sentences")
        match = next((c for c in choices if self.matches(response, c)), None)
        end = excerpt(self.shown_end(response), 70)
        side = "first" if self.at_start else "last"
        if expect == "present":
            if match is not None:
                return RuleResult(True, 1.0, f"has the fixed {self.what} {excerpt(match, 60)}")
            return RuleResult(False, 0.0, f"expected one of {len(choices)} fixed {self.plural} verbatim "
                              f"(e.g. {excerpt(choices[0], 50)}); {side} {self.unit} was {end}")
        if match is None:
            return RuleResult(True, 1.0, f"no fixed {self.what}; {side} {self.unit} was {end}")
        return RuleResult(False, 0.0, f"expected no fixed {self.what}; the response has {excerpt(match, 60)}")


def _replace_once(text: str, old: str, new: str, from_start: bool) -> str:
    """``text`` with the first (or last) ``old`` replaced by ``new``."""
    if from_start:
        return text.replace(old, new, 1)
    i = text.rfind(old)
    return text if i < 0 else text[:i] + new + text[i + len(old):]


MatchFn = Callable[[str, str], bool]
