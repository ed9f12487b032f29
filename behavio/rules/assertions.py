"""Plain assertions: ``contains``, ``not_contains``, ``regex``, ``starts_with``, ``ends_with``, ``max_words``."""

from __future__ import annotations

import re

from behavio.errors import BehavioError
from behavio.rules import RuleResult, register
from behavio.rules._text import excerpt


def _arg(args: dict, key: str, kind: str):
    if key not in args:
        raise BehavioError(f"{kind} rule: missing argument {key!r}")
    return args[key]


def _verdict(ok: bool, passed: str, failed: str) -> RuleResult:
    return RuleResult(ok, 1.0 if ok else 0.0, passed if ok else failed)


@register("contains")
def contains(response: str, args: dict, case: dict, finished: bool) -> RuleResult:
    """Pass when ``text`` occurs in the response (``ignore_case`` casefolds both)."""
    text, fold = str(_arg(args, "text", "contains")), bool(args.get("ignore_case", False))
    hay, needle = (response.casefold(), text.casefold()) if fold else (response, text)
    return _verdict(needle in hay, f"contains {text!r}", f"expected to contain {text!r}; got {excerpt(response)}")


@register("not_contains")
def not_contains(response: str, args: dict, case: dict, finished: bool) -> RuleResult:
    """Pass when ``text`` does not occur in the response (``ignore_case`` casefolds both)."""
    text, fold = str(_arg(args, "text", "not_contains")), bool(args.get("ignore_case", False))
    hay, needle = (response.casefold(), text.casefold()) if fold else (response, text)
    at = hay.find(needle)
    context = excerpt(response[max(0, at - 20):at + len(text) + 20], 60)
    return _verdict(at < 0, f"does not contain {text!r}", f"expected not to contain {text!r}; found in {context}")


@register("regex")
def regex(response: str, args: dict, case: dict, finished: bool) -> RuleResult:
    """Pass when ``pattern`` matches somewhere in the response (``re.search``)."""
    try:
        pattern = re.compile(_arg(args, "pattern", "regex"))
    except re.error as exc:
        raise BehavioError(f"regex rule: invalid pattern {args['pattern']!r}: {exc}") from None
    m = pattern.search(response)
    return _verdict(m is not None, f"matches /{pattern.pattern}/ at {excerpt(m.group(0), 40) if m else ''}",
                    f"expected a match for /{pattern.pattern}/; got {excerpt(response)}")


@register("starts_with")
def starts_with(response: str, args: dict, case: dict, finished: bool) -> RuleResult:
    """Pass when the stripped response starts with the stripped ``text``."""
    text = str(_arg(args, "text", "starts_with")).strip()
    return _verdict(response.strip().startswith(text), f"starts with {text!r}",
                    f"expected to start with {text!r}; got {excerpt(response.strip(), 60)}")


@register("ends_with")
def ends_with(response: str, args: dict, case: dict, finished: bool) -> RuleResult:
    """Pass when the stripped response ends with the stripped ``text``."""
    text, tail = str(_arg(args, "text", "ends_with")).strip(), response.strip()
    return _verdict(tail.endswith(text), f"ends with {text!r}",
                    f"expected to end with {text!r}; got ...{excerpt(tail[-60:], 60)}")


@register("max_words")
def max_words(response: str, args: dict, case: dict, finished: bool) -> RuleResult:
    """Pass when the response has at most ``limit`` whitespace-separated words; score = limit/words if over."""
    limit, count = int(_arg(args, "limit", "max_words")), len(response.split())
    if count <= limit:
        return RuleResult(True, 1.0, f"{count} words <= {limit}")
    return RuleResult(False, limit / count, f"expected at most {limit} words; got {count}")
