"""Rule ``prefix``: the response opens (or does not open) with one of a fixed set of sentences.

A choice matches when the normalized response (whitespace, curly quotes, case) starts with the
normalized choice followed by whitespace or the end. A paraphrase of a choice does not match.
"""

from __future__ import annotations

from behavio.errors import BehavioError
from behavio.rules import RuleResult, register
from behavio.rules._text import excerpt, first_sentence, starts_with_phrase


@register("prefix")
def prefix(response: str, args: dict, case: dict, finished: bool) -> RuleResult:
    """expect=present: starts with one of ``choices``; expect=absent: starts with none of them."""
    expect = args.get("expect", "present")
    choices = list(args.get("choices") or [])
    if expect not in ("present", "absent"):
        raise BehavioError(f"prefix rule: expect={expect!r}; expected 'present' or 'absent'")
    if not choices:
        raise BehavioError("prefix rule: 'choices' must be a non-empty list of sentences")
    match = next((c for c in choices if starts_with_phrase(response, c)), None)
    opening = excerpt(first_sentence(response), 70)
    if expect == "present":
        if match is not None:
            return RuleResult(True, 1.0, f"starts with the fixed prefix {excerpt(match, 60)}")
        return RuleResult(False, 0.0, f"expected one of {len(choices)} fixed prefixes verbatim "
                          f"(e.g. {excerpt(choices[0], 50)}); first sentence was {opening}")
    if match is None:
        return RuleResult(True, 1.0, f"no fixed prefix; first sentence was {opening}")
    return RuleResult(False, 0.0, f"expected no fixed prefix; response starts with {excerpt(match, 60)}")
