"""Kind ``max_words``: the answer has at most ``limit`` whitespace-separated words.

The check of ``length`` with ``unit: words, max: limit``; ``length`` also puts training answers in range
and derives DPO pairs, ``max_words`` only checks.
"""

from __future__ import annotations

from behavio.kinds._assertion import PlainAssertion, arg
from behavio.kinds.base import RuleResult
from behavio.kinds.length import count


class MaxWords(PlainAssertion):
    name = "max_words"
    summary = "The answer has at most a number of words."
    keys = {"limit": {"type": "integer", "minimum": 1, "description": "max_words: the word limit."}}
    required = ("limit",)
    static_keys = ("limit",)

    def score(self, response: str, args: dict, case, finished: bool) -> RuleResult:
        """Pass when the response has at most ``limit`` words; score = limit/words if over."""
        limit, words = int(arg(args, "limit", self.name)), count(response, "words")
        if words <= limit:
            return RuleResult(True, 1.0, f"{words} words <= {limit}")
        return RuleResult(False, limit / words, f"expected at most {limit} words; got {words}")


KIND = MaxWords()
