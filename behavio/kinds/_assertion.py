"""What the plain assertion kinds share (``contains``, ``not_contains``, ``regex``, ``starts_with``,
``ends_with``, ``max_words``): Jinja arguments rendered per row, one rule per row in scope, no DPO pairs."""

from __future__ import annotations

from typing import ClassVar

from behavio.errors import BehavioError
from behavio.kinds import base
from behavio.kinds.base import Kind, RuleResult

TEXT = {"type": "string", "description": "contains / not_contains / starts_with / ends_with: the text."}
IGNORE_CASE = {"type": "boolean", "default": False, "description": "contains / not_contains: compare case-insensitively."}


def arg(args: dict, key: str, kind: str):
    """A scorer argument, or BehavioError naming the rule and the missing key."""
    if key not in args:
        raise BehavioError(f"{kind} rule: missing argument {key!r}")
    return args[key]


def verdict(ok: bool, passed: str, failed: str) -> RuleResult:
    return RuleResult(ok, 1.0 if ok else 0.0, passed if ok else failed)


class PlainAssertion(Kind):
    """A check that shapes nothing in training: its rule is checked on every answered row in scope."""

    jinja_keys: ClassVar[tuple[str, ...]] = ()   # keys rendered per row (they may use ``row``)
    static_keys: ClassVar[tuple[str, ...]] = ()  # keys passed to the rule as written

    def row_args(self, behavior, row, spec, render):
        if row.set not in spec.scope(behavior):
            return None
        args = {key: render(behavior.get(key), (key,)) for key in self.jinja_keys if behavior.get(key) is not None}
        self.check_row_args(args, row)
        return args

    def check_row_args(self, args: dict, row) -> None:
        """Raise RowProblem when rendered arguments cannot work (a pattern that does not compile)."""

    def rules(self, behavior, example, spec) -> list:
        if example.row.set not in spec.scope(behavior):
            return []
        args = {key: behavior.get(key) for key in self.static_keys if behavior.get(key) is not None}
        args.update(example.args.get(behavior.id, {}))
        return [base.rule(behavior, self.name, **args)]


class TextAssertion(PlainAssertion):
    """An assertion about a ``text`` (Jinja, rendered per row)."""

    keys = {"text": TEXT}
    required = ("text",)
    jinja_keys = ("text",)


class CaseFoldableText(TextAssertion):
    """A ``text`` assertion that can ignore case."""

    keys = {"text": TEXT, "ignore_case": IGNORE_CASE}
    static_keys = ("ignore_case",)

    def haystack(self, response: str, args: dict) -> tuple[str, str, str]:
        """(text as written, response, text) casefolded when ``ignore_case``."""
        text = str(arg(args, "text", self.name))
        if args.get("ignore_case", False):
            return text, response.casefold(), text.casefold()
        return text, response, text
