"""Kind ``ends_with``: the stripped answer ends with a text."""

from __future__ import annotations

from behavio.kinds._assertion import TextAssertion, arg, verdict
from behavio.kinds._text import excerpt
from behavio.kinds.base import RuleResult


class EndsWith(TextAssertion):
    name = "ends_with"
    summary = "The answer ends with a text."

    def score(self, response: str, args: dict, case, finished: bool) -> RuleResult:
        """Pass when the stripped response ends with the stripped ``text``."""
        text, tail = str(arg(args, "text", self.name)).strip(), response.strip()
        return verdict(tail.endswith(text), f"ends with {text!r}", f"expected to end with {text!r}; got ...{excerpt(tail[-60:], 60)}")


KIND = EndsWith()
