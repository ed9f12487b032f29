"""Kind ``starts_with``: the stripped answer starts with a text."""

from __future__ import annotations

from behavio.kinds._assertion import TextAssertion, arg, verdict
from behavio.kinds._text import excerpt
from behavio.kinds.base import RuleResult


class StartsWith(TextAssertion):
    name = "starts_with"
    summary = "The answer starts with a text."

    def score(self, response: str, args: dict, case, finished: bool) -> RuleResult:
        """Pass when the stripped response starts with the stripped ``text``."""
        text = str(arg(args, "text", self.name)).strip()
        return verdict(response.strip().startswith(text), f"starts with {text!r}",
                       f"expected to start with {text!r}; got {excerpt(response.strip(), 60)}")


KIND = StartsWith()
