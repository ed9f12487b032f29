"""Kind ``regex``: a Python regular expression is found in the answer (``re.search``; flags inline, e.g. ``(?i)``)."""

from __future__ import annotations

import re

from behavio.errors import BehavioError
from behavio.kinds._assertion import PlainAssertion, arg, verdict
from behavio.kinds._text import excerpt
from behavio.kinds.base import RowProblem, RuleResult


def _compiles(pattern: str) -> str | None:
    """None when ``pattern`` compiles, else the reason."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return None


class Regex(PlainAssertion):
    name = "regex"
    summary = "A regular expression matches somewhere in the answer."
    keys = {"pattern": {"type": "string", "description": "regex: Python regular expression searched in the answer."}}
    required = ("pattern",)
    jinja_keys = ("pattern",)

    def problems(self, behavior, spec):
        pattern = behavior.get("pattern")
        if isinstance(pattern, str) and (why := _compiles(pattern)) is not None:  # a missing pattern is reported elsewhere
            yield ("pattern",), f"bad regular expression: {why}"

    def check_row_args(self, args: dict, row) -> None:
        if _compiles(args["pattern"]) is not None:
            raise RowProblem(("pattern",), f"pattern for row {row.label} is not a valid regular expression: {args['pattern'][:80]!r}")

    def score(self, response: str, args: dict, case, finished: bool) -> RuleResult:
        """Pass when ``pattern`` matches somewhere in the response (``re.search``)."""
        try:
            pattern = re.compile(arg(args, "pattern", self.name))
        except re.error as exc:
            raise BehavioError(f"regex rule: invalid pattern {args['pattern']!r}: {exc}") from None
        m = pattern.search(response)
        return verdict(m is not None, f"matches /{pattern.pattern}/ at {excerpt(m.group(0), 40, lines=True) if m else ''}",
                       f"expected a match for /{pattern.pattern}/; got {excerpt(response, 120, lines=True)}")


KIND = Regex()
