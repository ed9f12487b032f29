"""Kind ``max_words``: the answer has at most ``limit`` whitespace-separated words."""

from __future__ import annotations

from behavio.kinds._assertion import PlainAssertion, arg
from behavio.kinds.base import RuleResult


class MaxWords(PlainAssertion):
    name = "max_words"
    summary = "The answer has at most a number of words."
    keys = {"limit": {"type": "integer", "minimum": 1, "description": "max_words: the word limit."}}
    required = ("limit",)
    static_keys = ("limit",)

    def score(self, response: str, args: dict, case, finished: bool) -> RuleResult:
        """Pass when the response has at most ``limit`` words; score = limit/words if over."""
        limit, count = int(arg(args, "limit", self.name)), len(response.split())
        if count <= limit:
            return RuleResult(True, 1.0, f"{count} words <= {limit}")
        return RuleResult(False, limit / count, f"expected at most {limit} words; got {count}")


KIND = MaxWords()
