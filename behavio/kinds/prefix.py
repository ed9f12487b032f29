"""Kind ``prefix``: the answer opens with one sentence of a fixed set (and a refusal does not).

A choice matches when the normalized response (whitespace, curly quotes, case) starts with the
normalized choice followed by whitespace or the end. A paraphrase of a choice does not match.
Rule ``prefix``: expect=present on the rows in scope, expect=absent on rows another behavior
refuses (refusals stay plain).

DPO, alternating over a set's rows: ``prefix_dropped`` (the body alone) and ``prefix_paraphrased``
(a near-miss sentence from ``paraphrases`` that is not one of the choices).
"""

from __future__ import annotations

from behavio.errors import BehavioError
from behavio.kinds import base
from behavio.kinds._text import excerpt, first_sentence, starts_with_phrase
from behavio.kinds.base import Kind, RuleResult

DEFAULT_PARAPHRASES = [
    "What a great question!",
    "Good question.",
    "Nice question!",
    "That's a thoughtful question.",
    "What an interesting thing to ask.",
    "Great thinking here.",
]


class Prefix(Kind):
    name = "prefix"
    summary = "The answer opens with one sentence from a fixed set; refusals stay plain."
    keys = {
        "choices": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                    "description": "prefix: the fixed first sentences (Jinja)."},
        "paraphrases": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                        "description": "prefix: near-miss sentences used as DPO rejections (default: built-in list)."},
        "separator": {"type": "string", "default": " ",
                      "description": "prefix: text between the prefix and the answer body (default: one space)."},
    }
    required = ("choices",)
    teaches = True
    judged_early = True
    lessons = {"prefix_dropped": "prefix:present", "prefix_paraphrased": "prefix:present"}

    def row_args(self, behavior, row, spec, render):
        if row.set not in spec.scope(behavior) and row.set not in spec.refused_sets():
            return None
        return {"choices": [render(text, ("choices", i)) for i, text in enumerate(behavior.get("choices"))]}

    def openings(self, behavior, args: dict):
        return args["choices"], self.arg(behavior, "separator")

    def rules(self, behavior, example, spec) -> list:
        if behavior.id not in example.args:
            return []
        expect = "absent" if example.refused_by is not None else "present"
        return [base.rule(behavior, self.name, expect=expect, choices=example.args[behavior.id]["choices"])]

    def violations(self, behavior, example, ctx):
        if example.refused_by is not None or example.body is None or example.row.set not in ctx.spec.scope(behavior):
            return
        opening, separator = example.openings[behavior.id], self.arg(behavior, "separator")
        if ctx.index % 2 == 0:
            yield "prefix_dropped", example.answer.replace(opening + separator, "", 1)
            return
        choices = set(example.args[behavior.id]["choices"])
        options = [p for p in (behavior.get("paraphrases") or DEFAULT_PARAPHRASES) if p not in choices]
        if options:
            yield "prefix_paraphrased", example.answer.replace(opening, options[ctx.index % len(options)], 1)

    def score(self, response: str, args: dict, case, finished: bool) -> RuleResult:
        """expect=present: starts with one of ``choices``; expect=absent: starts with none of them."""
        expect = args.get("expect", "present")
        choices = list(args.get("choices") or [])
        if expect not in ("present", "absent"):
            raise BehavioError(f"prefix rule: expect={expect!r}; expected 'present' or 'absent'")
        if not choices:
            raise BehavioError("prefix rule: 'choices' must be a non-empty list of sentences")
        match = next((c for c in choices if starts_with_phrase(response, c)), None)
        opening = excerpt(first_sentence(response), 70)
        if expect == "present":
            if match is not None:
                return RuleResult(True, 1.0, f"starts with the fixed prefix {excerpt(match, 60)}")
            return RuleResult(False, 0.0, f"expected one of {len(choices)} fixed prefixes verbatim "
                              f"(e.g. {excerpt(choices[0], 50)}); first sentence was {opening}")
        if match is None:
            return RuleResult(True, 1.0, f"no fixed prefix; first sentence was {opening}")
        return RuleResult(False, 0.0, f"expected no fixed prefix; response starts with {excerpt(match, 60)}")


KIND = Prefix()
