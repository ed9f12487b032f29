"""DPO rejections of kinds that shape answer bodies (``Kind.shape_body``): the body in a broken form.

A kind that puts bodies in a form (a list, a length, a style, JSON) derives its rejections from the same
body: ``violate_body(behavior, body, violation)`` breaks the form of the shaped body, or, for a violation the
kind lists in ``undo_violations``, of the body as its source wrote it before this kind shaped it (the other
kinds' shapes kept): the base model's own long answer is the natural "too long" rejection of a length.
A body the base model writes is not known at compile time: the rejection is then a variant of its pending
marker, broken the same way right after the fill (``pending.jsonl`` ``shape`` entries with a ``violation``;
``undo: true`` for the unshaped form).
"""

from __future__ import annotations

from behavio import pending


def shaped_rejection(kind, behavior, example, ctx, violation: str) -> str | None:
    """``example``'s answer with its body broken as ``violation`` says; None when there is no such body."""
    body = example.body
    undo = violation in kind.undo_violations
    if pending.has_marker(body):
        if ctx.variant is None:
            return None
        entry = {"behavior": behavior.id, "kind": kind.name, "args": dict(behavior.raw), "violation": violation}
        if undo:
            entry["undo"] = True
        return example.answer.replace(body, ctx.variant(body, entry), 1)
    source = example.unshaped.get(behavior.id, body) if undo else body
    broken = kind.violate_body(behavior, source, violation)
    if broken is None or broken.strip() == body.strip():
        return None
    return example.answer.replace(body, broken, 1)


def rotated_rejections(kind, behavior, example, ctx, usable):
    """The DPO violation of ``example`` (an answered row the behavior shapes): the kind's violations this behavior can
    show (``usable(name)``) taken in turn by the row's index, its body broken that way."""
    if not in_scope(behavior, example, ctx.spec):
        return
    derivable = [v for v in kind.violation_names if ctx.allows(v) and usable(v)]
    if derivable:
        violation = derivable[ctx.index % len(derivable)]
        rejected = shaped_rejection(kind, behavior, example, ctx, violation)
        if rejected is not None:
            yield violation, rejected


def in_scope(behavior, example, spec) -> bool:
    """Whether ``example`` is an answered row the behavior shapes (a refusal's rows are not)."""
    return example.refused_by is None and example.body is not None and example.row.set in spec.scope(behavior)
