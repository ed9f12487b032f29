"""Kind ``prefix``: the answer opens with one sentence of a fixed set (and a refusal does not).

A choice matches when the normalized response (whitespace, curly quotes, case) starts with the
normalized choice followed by whitespace or the end. A paraphrase of a choice does not match.
Rule ``prefix``: expect=present on the rows in scope. A prefix that opens every answered set also
puts expect=absent on the rows another behavior refuses (refusals stay plain), counted on its own
line ``<id>/plain-refusals``; a prefix scoped to some sets says nothing about refusals.

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
    parts = {"plain-refusals": "refused prompts answered with the plain refusal, without the prefix"}
    violation_names = ("prefix_dropped", "prefix_paraphrased")

    def guards_refusals(self, behavior, spec) -> bool:
        """A prefix that opens every answered set (held-out sets aside) could be learned as "always open with
        it", so refusals are taught and checked to stay plain; a prefix scoped to some sets is not."""
        trained = {name for name in spec.answered_sets() if not spec.prompts[name].holdout}
        return bool(spec.refused_sets()) and trained <= set(spec.scope(behavior))

    def problems(self, behavior, spec):
        for name in behavior.sets("applies_to"):
            if name in spec.refused_sets():
                yield ("applies_to",), (f"prompt set {name!r} is refused by another behavior: its answer is the plain "
                                        "refusal, which a prefix cannot open; take it out of applies_to")

    def row_args(self, behavior, row, spec, render):
        refused_here = row.set in spec.refused_sets() and self.guards_refusals(behavior, spec)
        if row.set not in spec.scope(behavior) and not refused_here:
            return None
        return {"choices": [render(text, ("choices", i)) for i, text in enumerate(behavior.get("choices"))]}

    def openings(self, behavior, args: dict):
        return args["choices"], self.arg(behavior, "separator")

    def rules(self, behavior, example, spec) -> list:
        if behavior.id not in example.args:
            return []
        choices = example.args[behavior.id]["choices"]
        if example.refused_by is not None:
            return [base.rule(behavior, self.name, part="plain-refusals", expect="absent", choices=choices)]
        return [base.rule(behavior, self.name, expect="present", choices=choices)]

    def violations(self, behavior, example, ctx):
        if example.refused_by is not None or example.body is None or example.row.set not in ctx.spec.scope(behavior):
            return
        opening, separator = example.openings[behavior.id], self.arg(behavior, "separator")
        choices = set(example.args[behavior.id]["choices"])
        options = [p for p in (behavior.get("paraphrases") or DEFAULT_PARAPHRASES) if p not in choices]
        derivable = [v for v in self.violation_names if ctx.allows(v) and (v != "prefix_paraphrased" or options)]
        if not derivable:
            return
        violation = derivable[ctx.index % len(derivable)] if len(derivable) > 1 else derivable[0]
        if violation == "prefix_dropped":
            yield violation, example.answer.replace(opening + separator, "", 1)
        else:
            yield violation, example.answer.replace(opening, options[ctx.index % len(options)], 1)

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
