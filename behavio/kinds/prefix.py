"""Kind ``prefix``: the answer opens with one sentence of a fixed set (and a refusal does not).

A choice matches when the normalized response (whitespace, curly quotes, case) starts with the
normalized choice followed by whitespace or the end. A paraphrase of a choice does not match.
Rule ``prefix``: expect=present on the rows in scope. A prefix that opens every answered set also
puts expect=absent on the rows another behavior refuses (refusals stay plain), counted on its own
line ``<id>/plain-refusals``; a prefix scoped to some sets says nothing about refusals, and expects
expect=absent on the answered rows outside its sets, on the line ``<id>/elsewhere``.

DPO, alternating over a set's rows: ``prefix_dropped`` (the body alone) and ``prefix_paraphrased``
(a near-miss sentence from ``paraphrases`` that is not one of the choices); outside a scoped prefix's
sets, ``prefix_leaked`` (the prefix put on an answer that must not have it).
"""

from __future__ import annotations

from behavio.kinds._fixed_sentence import FixedSentence, keys_for
from behavio.kinds._text import first_sentence, starts_with_phrase

DEFAULT_PARAPHRASES = [
    "What a great question!",
    "Good question.",
    "Nice question!",
    "That's a thoughtful question.",
    "What an interesting thing to ask.",
    "Great thinking here.",
]


class Prefix(FixedSentence):
    name = "prefix"
    keys = keys_for("prefix", "the fixed first sentences (Jinja).",
                    "text between the prefix and the answer body (default: one space).")
    summary = "The answer opens with one sentence from a fixed set; refusals stay plain."
    defaults = {"separator": " "}
    judged_early = True
    lessons = {"prefix_dropped": "prefix:present", "prefix_paraphrased": "prefix:present", "prefix_leaked": "prefix:absent"}
    violation_names = ("prefix_dropped", "prefix_paraphrased", "prefix_leaked")
    at_start = True
    what = "prefix"
    default_paraphrases = DEFAULT_PARAPHRASES

    def openings(self, behavior, args: dict):
        return self._sentences(behavior, args)

    def matches(self, response: str, choice: str) -> bool:
        return starts_with_phrase(response, choice)

    def shown_end(self, response: str) -> str:
        return first_sentence(response)


KIND = Prefix()
