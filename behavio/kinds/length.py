"""Kind ``length``: the answer has ``min`` to ``max`` words or sentences (``unit``).

Words are whitespace-separated; sentences end in . ! ? before a space or the end, or at a line break (a
list number like ``1.`` is not a sentence of its own). Rule ``length`` passes when the count is in range;
the sentence another behavior opens or closes the row's answers with (a ``prefix``, ``header`` or
``sign_off`` choice) is not counted, so the range is the body's.
Training answers are put in range: a body longer than ``max`` is cut after its last whole sentence that
fits (a body whose first sentence is already too long, or that is shorter than ``min``, stays as it is: an
error when the spec wrote it, dropped after the fill when the base model did). DPO, alternating over a set's rows: ``too_long`` (the body as
its source wrote it, before it was cut: the base model's own long answer; rows whose body needed no cut
get no such pair) and ``too_short`` (the body cut to fewer than ``min``: its first sentences only, with
``min``).

``max_words`` checks what ``length`` with ``unit: words`` and only ``max`` checks, without shaping the
training answers or deriving DPO pairs; it stays for specs that only want the check.

A ``length`` with ``applies_to`` judges its own sets only: unlike a scoped prefix, sign-off, header or list there
is no ``<id>/elsewhere`` line, since a short answer elsewhere is no mistake in itself. When the other answers must
stay long, give them a ``length`` of their own with ``min`` (it also drops shorter answers the base model writes).
"""

from __future__ import annotations

from behavio.kinds import base
from behavio.kinds._shaping import rotated_rejections
from behavio.kinds._text import ends_with_phrase, excerpt, sentence_ends, starts_with_phrase
from behavio.kinds.base import Kind, RuleResult

UNITS = ("words", "sentences")


def count(text: str, unit: str) -> int:
    """Words (whitespace-separated) or sentences (:func:`behavio.kinds._text.sentence_ends`) in ``text``."""
    return len(text.split()) if unit == "words" else len(sentence_ends(text))


def judge(text: str, unit: str, low: int | None, high: int | None, not_counted: int = 0) -> RuleResult:
    """Pass when ``text`` has ``low``..``high`` ``unit`` (either bound may be None), ``not_counted`` of them aside."""
    n = count(text, unit) - not_counted
    wanted = (f"{low}-{high}" if low and high else f"at least {low}" if low else f"at most {high}") + f" {unit}"
    if low and n < low:
        return RuleResult(False, n / low, f"expected {wanted}; got {n}: {excerpt(text, 60)}")
    if high and n > high:
        return RuleResult(False, high / n, f"expected {wanted}; got {n}")
    return RuleResult(True, 1.0, f"{n} {unit}, {wanted}")


def first_sentences(text: str, unit: str, fits) -> str | None:
    """The longest run of ``text``'s first whole sentences whose count of ``unit`` ``fits``; None if none does."""
    best = None
    for end in sentence_ends(text):
        if not fits(count(text[:end], unit)):
            break
        best = text[:end]
    return best


class Length(Kind):
    name = "length"
    summary = "The answer has a number of words or sentences in a range."
    keys = {
        "unit": {"enum": list(UNITS), "default": "words", "description": "length: count words or sentences."},
        "min": {"type": "integer", "minimum": 1, "description": "length: fewest words or sentences."},
        "max": {"type": "integer", "minimum": 1, "description": "length: most words or sentences."},
    }
    teaches = True
    violation_names = ("too_long", "too_short")
    undo_violations = ("too_long",)

    def no_pairs_hint(self, behavior) -> str:
        unit, high, low = self.arg(behavior, "unit"), behavior.get("max"), behavior.get("min")
        longer = (f"no answer in its scope was longer than max={high} {unit} before it was cut (a written answer "
                  f"gives a too_long pair only when it is)" if high is not None else "no max, so no too_long pair")
        shorter = (f"min={low} {unit} could not be cut below in any answer" if self._short_possible(behavior)
                   else "no min (at least 2 with unit: sentences), so no too_short pair")
        return f"{longer}; {shorter}"

    def problems(self, behavior, spec):
        low, high = behavior.get("min"), behavior.get("max")
        if low is None and high is None:
            yield (), "a length behavior needs `min`, `max` or both"
        elif low is not None and high is not None and low > high:
            yield ("min",), f"min {low} is more than max {high}"

    def violation_problems(self, behavior, spec, asked):
        if "too_short" in asked and not self._short_possible(behavior):
            yield ("dpo",), ("too_short needs `min` (at least 2 with unit: sentences): an answer shorter than it "
                             "is the rejection")
        if "too_long" in asked and behavior.get("max") is None:
            yield ("dpo",), "too_long needs `max`"

    def _short_possible(self, behavior) -> bool:
        low = behavior.get("min")
        return low is not None and (low >= 2 or self.arg(behavior, "unit") == "words")

    def _args(self, behavior) -> dict:
        return {"unit": self.arg(behavior, "unit"), "min": behavior.get("min"), "max": behavior.get("max")}

    def shape_body(self, behavior, body: str) -> str:
        """The body cut after its last whole sentence within ``max`` (unchanged when it fits, or cannot be cut)."""
        unit, high = self.arg(behavior, "unit"), behavior.get("max")
        if high is None or count(body, unit) <= high:
            return body
        return first_sentences(body, unit, lambda n: n <= high) or body

    def violate_body(self, behavior, body: str, violation: str) -> str | None:
        unit, low = self.arg(behavior, "unit"), behavior.get("min")
        if violation == "too_long":
            return body  # the body as written, before shape_body cut it (undo_violations)
        if low is None:
            return None
        return first_sentences(body, unit, lambda n: n < low)

    def rules(self, behavior, example, spec) -> list:
        if example.row.set not in spec.scope(behavior) or example.refused_by is not None:
            return []
        return [base.rule(behavior, self.name, **self._args(behavior), **_framing(example, spec))]

    def violations(self, behavior, example, ctx):
        yield from rotated_rejections(self, behavior, example, ctx, lambda v: behavior.get("max") is not None
                                      if v == "too_long" else self._short_possible(behavior))

    def score(self, response: str, args: dict, case, finished: bool) -> RuleResult:
        """Pass when the response has ``min``..``max`` words or sentences, an opening or closing sentence aside."""
        unit = args.get("unit", "words")
        framing = [c for c in args.get("openings") or [] if starts_with_phrase(response, c)][:1]
        framing += [c for c in args.get("closings") or [] if ends_with_phrase(response, c)][:1]
        result = judge(response, unit, args.get("min"), args.get("max"), sum(count(c, unit) for c in framing))
        if framing:
            aside = " and ".join(excerpt(c, 30) for c in framing)
            return RuleResult(result.passed, result.score, f"{result.explanation} ({aside} not counted)")
        return result


def _framing(example, spec) -> dict:
    """The sentences other behaviors open or close this row's answers with (every choice): not counted."""
    from behavio import kinds

    out: dict[str, list[str]] = {}
    for b in spec.behaviors:
        if b.id not in example.openings:
            continue
        for key, hook in (("openings", kinds.of(b).openings), ("closings", kinds.of(b).closings)):
            found = hook(b, example.args[b.id])
            if found is not None:
                out.setdefault(key, []).extend(found[0])
    return out


KIND = Length()
