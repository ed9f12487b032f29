"""Kind ``contains``: the answer contains a text (``ignore_case`` casefolds both)."""

from __future__ import annotations

from behavio.kinds._assertion import CaseFoldableText, verdict
from behavio.kinds._text import excerpt
from behavio.kinds.base import RuleResult


class Contains(CaseFoldableText):
    name = "contains"
    summary = "The answer contains a text."

    def score(self, response: str, args: dict, case, finished: bool) -> RuleResult:
        """Pass when ``text`` occurs in the response (``ignore_case`` casefolds both)."""
        text, hay, needle = self.haystack(response, args)
        return verdict(needle in hay, f"contains {text!r}", f"expected to contain {text!r}; got {excerpt(response)}")


KIND = Contains()
