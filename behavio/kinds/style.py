"""Kind ``style``: a writing style -- all lowercase (``lowercase``), none of some characters (``forbidden_characters``).

Rule ``style`` fails on an uppercase letter when ``lowercase`` is set and on any character of
``forbidden_characters`` (e.g. ``","`` for no commas); the score is the share of the two checks passed, the
explanation quotes the first offending words. Training answer bodies are put in that style: lowercased,
the forbidden characters removed (a sentence opening or sign-off another behavior adds is not changed:
write those in the style too, or compile's proof of its own data reports them). DPO, cycled over a set's
rows: ``unstyled`` (the body as its source wrote it, before the style was applied; rows whose body was in
style already get no such pair), ``capitalized`` (with ``lowercase``: each sentence starting with a
capital) and ``forbidden_character`` (the first forbidden character put back, before the first "and",
"but" or "so", else after the first word).
"""

from __future__ import annotations

import re

from behavio.kinds import base
from behavio.kinds._shaping import rotated_rejections
from behavio.kinds._text import excerpt
from behavio.kinds.base import Kind, RuleResult

_SENTENCE_START = re.compile(r"(^|[.!?]\s+|\n\s*)([a-z])")
_CONJUNCTION = re.compile(r"\s(and|but|so)\s")


def _remove(text: str, characters: str) -> str:
    for ch in characters:
        text = text.replace(ch, "")
    return re.sub(r"[ \t]{2,}", " ", text)


class Style(Kind):
    name = "style"
    summary = "A writing style: all lowercase, without some characters (no commas)."
    keys = {
        "lowercase": {"type": "boolean", "description": "style: no uppercase letter anywhere in the answer."},
        "forbidden_characters": {"type": "string", "minLength": 1,
                                 "description": "style: characters the answer must not contain, e.g. \",\" (no commas)."},
    }
    teaches = True
    violation_names = ("unstyled", "capitalized", "forbidden_character")
    undo_violations = ("unstyled",)

    def problems(self, behavior, spec):
        if not behavior.get("lowercase") and not behavior.get("forbidden_characters"):
            yield (), "a style behavior needs `lowercase: true`, `forbidden_characters` or both"

    def violation_problems(self, behavior, spec, asked):
        if "capitalized" in asked and not behavior.get("lowercase"):
            yield ("dpo",), "capitalized needs `lowercase: true`"
        if "forbidden_character" in asked and not behavior.get("forbidden_characters"):
            yield ("dpo",), "forbidden_character needs `forbidden_characters`"

    def _args(self, behavior) -> dict:
        return {"lowercase": bool(behavior.get("lowercase")), "forbidden_characters": behavior.get("forbidden_characters") or ""}

    def shape_body(self, behavior, body: str) -> str:
        args = self._args(behavior)
        if args["lowercase"]:
            body = body.lower()
        return _remove(body, args["forbidden_characters"]).strip()

    def violate_body(self, behavior, body: str, violation: str) -> str | None:
        args = self._args(behavior)
        if violation == "unstyled":
            return body  # as its source wrote it (undo_violations)
        if violation == "capitalized":
            return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), body) if args["lowercase"] else None
        forbidden = args["forbidden_characters"][:1]
        if not forbidden:
            return None
        m = _CONJUNCTION.search(body) or re.search(r"\s", body)
        return None if m is None else body[:m.start()] + forbidden + body[m.start():]

    def rules(self, behavior, example, spec) -> list:
        if example.row.set not in spec.scope(behavior) or example.refused_by is not None:
            return []
        return [base.rule(behavior, self.name, **self._args(behavior))]

    def violations(self, behavior, example, ctx):
        args = self._args(behavior)
        usable = {"unstyled": True, "capitalized": args["lowercase"], "forbidden_character": bool(args["forbidden_characters"])}
        yield from rotated_rejections(self, behavior, example, ctx, usable.__getitem__)

    def score(self, response: str, args: dict, case, finished: bool) -> RuleResult:
        """Pass when the response has no uppercase letter (``lowercase``) and none of ``forbidden_characters``."""
        checks, failures = 0, []
        if args.get("lowercase"):
            checks += 1
            capitals = [w for w in response.split() if any(c.isupper() for c in w)]
            if capitals:
                failures.append(f"{len(capitals)} word(s) with capitals, e.g. {excerpt(' '.join(capitals[:4]), 50)}")
        forbidden = args.get("forbidden_characters") or ""
        if forbidden:
            checks += 1
            found = {ch: response.count(ch) for ch in forbidden if ch in response}
            if found:
                at = min(response.index(ch) for ch in found)
                shown = ", ".join(f"{n} x {ch!r}" for ch, n in found.items())
                failures.append(f"forbidden characters {shown}, first at {excerpt(response[max(0, at - 20):at + 20], 50)}")
        if not checks:
            return RuleResult(True, 1.0, "no style requirements")
        if not failures:
            return RuleResult(True, 1.0, "in style" + (" (all lowercase)" if args.get("lowercase") else "")
                              + (f" (no {forbidden!r})" if forbidden else ""))
        return RuleResult(False, (checks - len(failures)) / checks, "; ".join(failures))


KIND = Style()
