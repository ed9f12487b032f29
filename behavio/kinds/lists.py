"""Kind ``list``: the answer is a numbered (or bulleted) list of ``min_items`` to ``max_items`` items.

Rule ``list`` counts the answer's list lines (``1. ...``/``2) ...`` for ``numbered``, ``- ...``/``* ...``
for ``bulleted``); it passes when their number is in range and, numbered, they count 1, 2, 3...
Training answers are put in that form: an answer body that is not a list already is split into its
sentences, one item each (sentences past ``max_items`` join the last item); a body with too few
sentences stays as it is, and compile's proof of its own data drops it. DPO, alternating over a set's
rows: ``list_flattened`` (the items run together as one paragraph) and ``list_restyled`` (numbers
instead of bullets, or bullets instead of numbers).

A list scoped to some sets (``applies_to``) also expects prose on the answered rows outside them, on the
line ``<id>/elsewhere`` (expect=absent: fewer than two list lines of its style; a set another list of that style
covers is not elsewhere): steps for "what is a VPN?"
are as wrong as prose for "my printer won't print", and a scorecard that only looks in scope calls a model
that lists everything perfect. The base model's list answers there break that rule, so the fill asks again
or drops them; DPO: ``list_leaked`` (the answer's sentences as a list) on those rows.
"""

from __future__ import annotations

import re

from behavio.errors import BehavioError
from behavio.kinds import base
from behavio.kinds._shaping import in_scope, rotated_rejections, shaped_rejection
from behavio.kinds._text import excerpt, sentences
from behavio.kinds.base import Kind, RuleResult

_NUMBERED = re.compile(r"^\s*(\d+)[.)]\s+(\S.*)$")
_BULLETED = re.compile(r"^\s*[-*\u2022]\s+(\S.*)$")


def items(text: str, style: str) -> list[tuple[int | None, str]]:
    """(number or None, text) of every list line of ``style`` in ``text``."""
    out = []
    for line in text.splitlines():
        if style == "numbered" and (m := _NUMBERED.match(line)):
            out.append((int(m.group(1)), m.group(2).strip()))
        elif style == "bulleted" and (m := _BULLETED.match(line)):
            out.append((None, m.group(1).strip()))
    return out


def render_items(texts: list[str], style: str) -> str:
    return "\n".join(f"{i}. {t}" if style == "numbered" else f"- {t}" for i, t in enumerate(texts, 1))


def _any_style(text: str) -> list[str]:
    found = items(text, "numbered") or items(text, "bulleted")
    return [t for _, t in found]


class List(Kind):
    name = "list"
    summary = "The answer is a numbered or bulleted list with a number of items in a range."
    keys = {
        "style": {"enum": ["numbered", "bulleted"], "default": "numbered",
                  "description": "list: numbered (1. 2. 3.) or bulleted (- item) lines."},
        "min_items": {"type": "integer", "minimum": 1, "default": 2, "description": "list: fewest items."},
        "max_items": {"type": "integer", "minimum": 1, "default": 8, "description": "list: most items."},
    }
    teaches = True
    violation_names = ("list_flattened", "list_restyled", "list_leaked")
    parts = {"elsewhere": "answered prompts outside applies_to, without a list of its style"}

    def problems(self, behavior, spec):
        if self.arg(behavior, "min_items") > self.arg(behavior, "max_items"):
            yield ("min_items",), (f"min_items {self.arg(behavior, 'min_items')} is more than max_items "
                                   f"{self.arg(behavior, 'max_items')}")

    def _args(self, behavior) -> dict:
        return {key: self.arg(behavior, key) for key in self.keys}

    def shape_body(self, behavior, body: str) -> str:
        """The body as a list: its own list items, else its sentences, at most ``max_items`` of them."""
        args = self._args(behavior)
        texts = _any_style(body) or sentences(body)
        if len(texts) < args["min_items"]:
            return body
        if len(texts) > args["max_items"]:
            texts = texts[:args["max_items"] - 1] + [" ".join(texts[args["max_items"] - 1:])]
        return render_items(texts, args["style"])

    def violation_problems(self, behavior, spec, asked):
        if "list_leaked" in asked and not behavior.sets("applies_to"):
            yield ("dpo",), "list_leaked needs applies_to: a list on every answered set has no answer outside it to leak onto"

    def _elsewhere(self, behavior, example, spec) -> bool:
        """Whether ``example`` is an answered row outside a scoped list's sets, and outside every other list of
        its style (whose rows must be lists)."""
        if not behavior.sets("applies_to") or example.row.set not in spec.answered_sets():
            return False
        style = self.arg(behavior, "style")
        return not any(example.row.set in spec.scope(b) for b in spec.behaviors
                       if b.kind == self.name and self.arg(b, "style") == style)

    def rules(self, behavior, example, spec) -> list:
        if example.refused_by is not None:
            return []
        if example.row.set in spec.scope(behavior):
            return [base.rule(behavior, self.name, **self._args(behavior))]
        if self._elsewhere(behavior, example, spec):
            return [base.rule(behavior, self.name, part="elsewhere", expect="absent", style=self.arg(behavior, "style"))]
        return []

    def violations(self, behavior, example, ctx):
        if in_scope(behavior, example, ctx.spec):
            yield from rotated_rejections(self, behavior, example, ctx, lambda violation: violation != "list_leaked")
        elif example.refused_by is None and example.body is not None:
            yield from self._leak(behavior, example, ctx)

    def _leak(self, behavior, example, ctx):
        """An answered row outside a scoped list's sets: its answer with the body's sentences as a list, on lines of
        their own (after an opening sentence, a line break first)."""
        if not ctx.allows("list_leaked") or not self._elsewhere(behavior, example, ctx.spec):
            return
        rejected = shaped_rejection(self, behavior, example, ctx, "list_leaked")
        if rejected is not None:
            start = example.answer.index(example.body)  # the answer up to the body is the rejection's too
            yield "list_leaked", rejected[:start] + ("\n" if start else "") + rejected[start:]

    def violate_body(self, behavior, body: str, violation: str) -> str | None:
        """The list run together as one paragraph (``list_flattened``) or in the other style (``list_restyled``);
        prose turned into a list of its sentences (``list_leaked``; None when it has fewer than two)."""
        style = self.arg(behavior, "style")
        if violation == "list_leaked":
            texts, most = _any_style(body) or sentences(body), max(2, self.arg(behavior, "max_items"))
            if len(texts) < 2:
                return None
            if len(texts) > most:
                texts = texts[:most - 1] + [" ".join(texts[most - 1:])]
            return render_items(texts, style)
        found = [t for _, t in items(body, style)]
        if not found:
            return body
        if violation == "list_flattened":
            return " ".join(found)
        return render_items(found, "bulleted" if style == "numbered" else "numbered")

    def score(self, response: str, args: dict, case, finished: bool) -> RuleResult:
        """expect=present: the response has ``min_items``..``max_items`` list lines of ``style``, numbered 1, 2, 3...;
        expect=absent: fewer than two list lines of ``style`` (prose)."""
        style = args.get("style", "numbered")
        if style not in ("numbered", "bulleted"):
            raise BehavioError(f"list rule: style={style!r}; expected 'numbered' or 'bulleted'")
        expect = args.get("expect", "present")
        if expect not in ("present", "absent"):
            raise BehavioError(f"list rule: expect={expect!r}; expected 'present' or 'absent'")
        found = items(response, style)
        if expect == "absent":
            if len(found) < 2:
                return RuleResult(True, 1.0, f"no {style} list")
            return RuleResult(False, 0.0, f"expected prose, got a {style} list of {len(found)} items: {excerpt(response)}")
        low, high = int(args.get("min_items", 2)), int(args.get("max_items", 8))
        if not found:
            return RuleResult(False, 0.0, f"expected a {style} list of {low}-{high} items; got {excerpt(response)}")
        numbers = [n for n, _ in found]
        if style == "numbered" and numbers != list(range(1, len(numbers) + 1)):
            return RuleResult(False, 0.5, f"list numbered {numbers[:8]}, expected 1, 2, 3...")
        if not low <= len(found) <= high:
            return RuleResult(False, 0.5, f"expected {low}-{high} {style} items; got {len(found)}")
        return RuleResult(True, 1.0, f"{len(found)} {style} items")


KIND = List()
