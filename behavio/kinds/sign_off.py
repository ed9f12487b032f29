"""Kind ``sign_off``: the answer ends with one closing line of a fixed set (and a refusal does not).

A choice matches when the normalized response (whitespace, curly quotes, case) ends with the
normalized choice, preceded by whitespace or the start. A paraphrase of a choice does not match.
Rule ``sign_off``: expect=present on the rows in scope; a sign-off on every answered set also puts
expect=absent on the rows another behavior refuses, on the line ``<id>/plain-refusals``; one scoped to some
sets expects it absent on the answered rows outside them, on the line ``<id>/elsewhere``.

DPO, alternating over a set's rows: ``sign_off_dropped`` (the answer without it) and
``sign_off_paraphrased`` (a near-miss closing from ``paraphrases`` that is not one of the choices);
outside a scoped sign-off's sets, ``sign_off_leaked`` (the sign-off put on an answer that must not have it).
"""

from __future__ import annotations

from behavio.kinds._fixed_sentence import FixedSentence, keys_for
from behavio.kinds._text import ends_with_phrase, last_sentence

DEFAULT_PARAPHRASES = ["Hope this helps!", "Have a great day!", "Let me know if you need anything else.",
                       "Take care!", "Cheers!", "Best wishes."]


class SignOff(FixedSentence):
    name = "sign_off"
    keys = keys_for("sign_off", "the fixed closing lines (Jinja).",
                    "text between the answer body and the sign-off (default: a blank line).")
    summary = "The answer ends with a closing line from a fixed set; refusals stay plain."
    defaults = {"separator": "\n\n"}
    violation_names = ("sign_off_dropped", "sign_off_paraphrased", "sign_off_leaked")
    at_start = False
    what = "sign-off"
    plural = "sign-offs"
    default_paraphrases = DEFAULT_PARAPHRASES

    def closings(self, behavior, args: dict):
        return self._sentences(behavior, args)

    def matches(self, response: str, choice: str) -> bool:
        return ends_with_phrase(response, choice)

    def shown_end(self, response: str) -> str:
        return last_sentence(response)


KIND = SignOff()
