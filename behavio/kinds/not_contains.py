"""Kind ``not_contains``: the answer does not contain a text (``ignore_case`` casefolds both)."""

from __future__ import annotations

from behavio.kinds._assertion import CaseFoldableText, verdict
from behavio.kinds._text import excerpt
from behavio.kinds.base import RuleResult


class NotContains(CaseFoldableText):
    name = "not_contains"
    summary = "The answer does not contain a text."

    def score(self, response: str, args: dict, case, finished: bool) -> RuleResult:
        """Pass when ``text`` does not occur in the response; the explanation shows where it does."""
        text, hay, needle = self.haystack(response, args)
        at = hay.find(needle)
        context = excerpt(response[max(0, at - 20):at + len(text) + 20], 60)
        return verdict(at < 0, f"does not contain {text!r}", f"expected not to contain {text!r}; found in {context}")


KIND = NotContains()
