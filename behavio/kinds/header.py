"""Kind ``header``: the answer opens with a header line from a fixed set, on a line of its own, then a body.

A choice matches when the answer's first line, normalized (whitespace, curly quotes, case), is the normalized
choice and text follows on the next lines. A choice may use ``row`` (``"## {{ row.subject | title }}"``).
Rule ``header``: expect=present on the rows in scope; a header on every answered set also puts
expect=absent on the rows another behavior refuses (refusals stay plain), on the line ``<id>/plain-refusals``;
a header scoped to some sets expects it absent on the answered rows outside them, on the line ``<id>/elsewhere``.
Training answers are the header, ``separator`` (a line break), and the body.

DPO, cycled over a set's rows: ``header_dropped`` (the body alone), ``header_paraphrased`` (a near-miss
header from ``paraphrases`` that is not one of the choices) and ``header_inline`` (the header run into the
body's first line); outside a scoped header's sets, ``header_leaked`` (the header put on an answer that must
not have it).
"""

from __future__ import annotations

from behavio.kinds._fixed_sentence import FixedSentence, keys_for, _replace_once
from behavio.kinds._text import normalize

DEFAULT_PARAPHRASES = ["Answer:", "Summary:", "Here's what you need to know:", "Quick answer:", "Overview", "Notes:"]


def split_header(response: str) -> tuple[str, str]:
    """(first line, the rest) of ``response`` with leading blank lines skipped."""
    head, _, rest = response.lstrip().partition("\n")
    return head, rest


class Header(FixedSentence):
    name = "header"
    keys = keys_for("header", "the fixed header lines (Jinja), each a line of its own.",
                    "text between the header and the body (default: a line break).")
    summary = "The answer opens with a header line from a fixed set, on its own line, then a body."
    defaults = {"separator": "\n"}
    judged_early = True
    lessons = {"header_dropped": "header:present", "header_paraphrased": "header:present",
               "header_inline": "header:present", "header_leaked": "header:absent"}
    violation_names = ("header_dropped", "header_paraphrased", "header_inline", "header_leaked")
    at_start = True
    what = "header"
    plural = "headers"
    unit = "line"
    default_paraphrases = DEFAULT_PARAPHRASES

    def problems(self, behavior, spec):
        yield from super().problems(behavior, spec)
        if "\n" not in self.arg(behavior, "separator"):
            yield ("separator",), "a header's separator must contain a line break (the header is a line of its own)"
        for i, choice in enumerate(behavior.get("choices") or []):
            if "\n" in choice.strip():
                yield ("choices", i), "a header is one line; this choice has a line break"

    def openings(self, behavior, args: dict):
        return self._sentences(behavior, args)

    def matches(self, response: str, choice: str) -> bool:
        head, rest = split_header(response)
        return normalize(head) == normalize(choice) and bool(rest.strip())

    def shown_end(self, response: str) -> str:
        return split_header(response)[0]

    def violations(self, behavior, example, ctx):
        inline = "header_inline"
        if (example.refused_by is None and example.body is not None and example.row.set in ctx.spec.scope(behavior)
                and ctx.allows(inline) and ctx.index % 3 == 2):  # every third in-scope row of the three in-scope violations
            header, separator = example.openings[behavior.id], self.arg(behavior, "separator")
            yield inline, _replace_once(example.answer, header + separator, header + " ", True)
            return
        yield from super().violations(behavior, example, ctx)


KIND = Header()
