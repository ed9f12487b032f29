"""DPO pairs derived from the rules: the rejected answer breaks exactly one rule.

| kind          | violations (cycled over the rows of a set)                                   |
|---------------|------------------------------------------------------------------------------|
| refusal       | `answered` (the model's own answer instead of the refusal), and, when the spec
|               | has a prefix behavior, every third row `complimented_refusal` (prefix + refusal) |
| refusal (contrast set) | `over_refused`: the refusal text instead of the answer               |
| prefix        | `prefix_dropped` (body alone), `prefix_paraphrased` (a near-miss sentence)    |
| structure     | `section_removed`, `sections_reordered`, `docstring_stripped` (when required) |
| no_repetition | `looped`: the answer trailing off into "and and and ..." (every 4th row)      |
| on_topic      | `off_topic`: the answer of a row from another prompt set (every 4th row)      |
| plain assertions | none                                                                      |
"""

from __future__ import annotations

import re

from behavio.compiler.compose import Example, prefix_behaviors
from behavio.spec.model import Behavior, Spec

DEFAULT_PARAPHRASES = [
    "What a great question!",
    "Good question.",
    "Nice question!",
    "That's a thoughtful question.",
    "What an interesting thing to ask.",
    "Great thinking here.",
]
GUARD_EVERY = 4  # no_repetition / on_topic pairs on one row in four: they guard, they do not teach
_DOCSTRING = re.compile(r'\n?[ \t]*("""|\'\'\')(?:.|\n)*?\1[ \t]*\n?')


class Donors:
    """Answer bodies that off-topic rejections borrow: for each set, the bodies of every other set."""

    def __init__(self, examples: list[Example]):
        self._all = [(ex.row.set, ex.body) for ex in examples if ex.body is not None]
        self._by_set: dict[str, list[str]] = {}

    def for_set(self, name: str) -> list[str]:
        if name not in self._by_set:
            self._by_set[name] = [body for s, body in self._all if s != name]
        return self._by_set[name]


def pairs_for(spec: Spec, ex: Example, others: Donors) -> list[dict]:
    """Every DPO pair of one example; ``others`` feeds off-topic rejections."""
    out = []
    idx = ex.row.index
    for b in spec.behaviors:
        if b.get("dpo", True) is False:
            continue
        for violation, rejected in _violations(spec, b, ex, idx, others):
            if rejected is not None and rejected.strip() != ex.answer.strip():
                out.append(_pair(ex, b, violation, rejected))
    return out


def _violations(spec: Spec, b: Behavior, ex: Example, idx: int, others: Donors):
    if b.kind == "refusal":
        if ex.refused_by == b.id:
            prefixes = [p for p in prefix_behaviors(spec) if p.id in ex.choices]
            if prefixes and idx % 3 == 2:
                p = prefixes[0]
                yield "complimented_refusal", ex.choices[p.id][idx % len(ex.choices[p.id])] + p.get("separator", " ") + ex.answer
            elif ex.answer_body is not None:
                yield "answered", ex.answer_body
        elif ex.row.set in b.sets("contrast") and ex.refused_by is None:
            texts = ex.refusals[b.id]
            yield "over_refused", texts[idx % len(texts)]
        return
    if ex.refused_by is not None or ex.body is None or ex.row.set not in spec.scope(b):
        if b.kind == "no_repetition" and ex.refused_by is not None and ex.row.set in spec.scope(b) and idx % GUARD_EVERY == 1:
            yield "looped", _loop(ex.answer)
        return
    if b.kind == "prefix":
        if idx % 2 == 0:
            yield "prefix_dropped", ex.answer.replace(ex.prefixes[b.id] + b.get("separator", " "), "", 1)
        else:
            choices = set(ex.choices[b.id])
            options = [p for p in (b.get("paraphrases") or DEFAULT_PARAPHRASES) if p not in choices]
            if options:
                yield "prefix_paraphrased", ex.answer.replace(ex.prefixes[b.id], options[idx % len(options)], 1)
    elif b.kind == "structure":
        yield from _structure_violation(b, ex, idx)
    elif b.kind == "no_repetition" and idx % GUARD_EVERY == 0:
        yield "looped", _loop(ex.answer)
    elif b.kind == "on_topic" and idx % GUARD_EVERY == 2:
        donors = others.for_set(ex.row.set)
        if donors:
            yield "off_topic", ex.answer.replace(ex.body, donors[idx % len(donors)], 1)


def _structure_violation(b: Behavior, ex: Example, idx: int):
    options = []
    sections = b.get("sections") or []
    if len(sections) >= 1:
        options.append("section_removed")
    if len(sections) >= 2:
        options.append("sections_reordered")
    if (b.get("code") or {}).get("docstring") and _DOCSTRING.search(ex.answer):
        options.append("docstring_stripped")
    if not options:
        return
    choice = options[idx % len(options)]
    parts = _split_sections(ex.answer, sections)
    if choice == "docstring_stripped":
        yield choice, _DOCSTRING.sub("\n", ex.answer)
    elif parts is not None and choice == "section_removed":
        head, bodies = parts
        drop = idx % len(bodies)
        yield choice, _same_ending(ex.answer, head + "".join(s for i, s in enumerate(bodies) if i != drop))
    elif parts is not None and choice == "sections_reordered":
        head, bodies = parts
        i = idx % (len(bodies) - 1)
        bodies[i], bodies[i + 1] = bodies[i + 1], bodies[i]
        yield choice, _same_ending(ex.answer, head + "".join(bodies))


def _same_ending(original: str, text: str) -> str:
    """``text`` ending in the newlines ``original`` ends in, so the pair differs only in its sections."""
    return text.rstrip("\n") + original[len(original.rstrip("\n")):]


def _split_sections(text: str, sections: list[str]):
    """Split ``text`` at the required header lines: (text before, [section texts]); None if a header is missing."""
    if not sections:
        return None
    positions = []
    for header in sections:
        m = re.search(rf"(?m)^[ \t]*{re.escape(header)}[ \t]*$", text)
        if not m:
            return None
        positions.append(m.start())
    if positions != sorted(positions):
        return None
    bounds = positions + [len(text)]
    bodies = [text[bounds[i]:bounds[i + 1]] for i in range(len(positions))]
    bodies = [b if b.endswith("\n") else b + "\n" for b in bodies]
    return text[:positions[0]], bodies


def _loop(answer: str) -> str:
    return answer.rstrip() + " and" * 24


def _pair(ex: Example, b: Behavior, violation: str, rejected: str) -> dict:
    return {
        "id": f"{ex.id}/{b.id}/{violation}",
        "prompt": ex.prompt,
        "chosen": [{"role": "assistant", "content": ex.answer}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "behavior": b.id,
        "violation": violation,
        "prompt_set": ex.row.set,
    }
