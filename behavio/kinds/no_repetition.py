"""Kind ``no_repetition``: degeneration guard (loops, repeated n-grams, running into the token limit).

On lowercased word tokens, fails when
- any word ``ngram`` occurs more than ``max_ngram_repeats`` times;
- a unit of 1..``ngram`` words repeats back to back more than ``max_ngram_repeats`` times
  ("and and and and", "I think I think I think I think");
- the distinct-2 ratio (distinct bigrams / bigrams) is below ``min_distinct_2`` (only from 20 words);
- ``finished`` is False: generation hit the token limit without stopping.

It applies to every prompt set (refusals included) unless ``applies_to`` narrows it. DPO: ``looped``,
the answer trailing off into "and and and ..." on one row in four (it guards, it does not teach).
"""

from __future__ import annotations

from collections import Counter

from behavio.kinds import base
from behavio.kinds._text import words
from behavio.kinds.base import Kind, RuleResult

MIN_WORDS_FOR_DISTINCT = 20
GUARD_EVERY = 4  # a looped rejection on one row in four


def _worst_ngram(tokens: list[str], n: int) -> tuple[int, str]:
    grams = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    if not grams:
        return 0, ""
    gram, count = grams.most_common(1)[0]
    return count, " ".join(gram)


def _worst_tandem(tokens: list[str], max_period: int) -> tuple[int, str]:
    """Most back-to-back copies of any unit of 1..max_period words."""
    best, unit = 1, ""
    for p in range(1, max_period + 1):
        run = 0
        for i in range(p, len(tokens)):
            run = run + 1 if tokens[i] == tokens[i - p] else 0
            copies = 1 + (run // p)
            if copies > best:
                best, unit = copies, " ".join(tokens[i - p + 1:i + 1])
    return best, unit


def distinct_2(tokens: list[str]) -> float:
    """Distinct bigrams / bigrams (1.0 for fewer than two tokens)."""
    bigrams = list(zip(tokens, tokens[1:]))
    return len(set(bigrams)) / len(bigrams) if bigrams else 1.0


def loop(answer: str) -> str:
    """``answer`` trailing off into "and and and ..." (the degenerate rejection)."""
    return answer.rstrip() + " and" * 24


class NoRepetition(Kind):
    name = "no_repetition"
    summary = "No loops, no n-gram repeated too often, enough distinct bigrams, and the answer stops before the token limit."
    keys = {
        "ngram": {"type": "integer", "minimum": 1, "maximum": 20, "default": 4,
                  "description": "no_repetition: n-gram size (default 4)."},
        "max_ngram_repeats": {"type": "integer", "minimum": 1, "default": 3,
                              "description": "no_repetition: most times one n-gram may occur (default 3)."},
        "min_distinct_2": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.3,
                           "description": "no_repetition: lowest share of distinct bigrams (default 0.3)."},
    }

    violation_names = ("looped",)

    def scope(self, behavior, spec) -> tuple[str, ...]:
        return behavior.sets("applies_to") or tuple(spec.prompts)

    def rules(self, behavior, example, spec) -> list:
        if example.row.set not in spec.scope(behavior):
            return []
        return [base.rule(behavior, self.name, **{key: self.arg(behavior, key) for key in self.keys})]

    def violations(self, behavior, example, ctx):
        if example.row.set not in ctx.spec.scope(behavior) or not ctx.allows("looped"):
            return
        if example.refused_by is not None:
            if ctx.index % GUARD_EVERY == 1:
                yield "looped", loop(example.answer)
        elif example.body is not None and ctx.index % GUARD_EVERY == 0:
            yield "looped", loop(example.answer)

    def score(self, response: str, args: dict, case, finished: bool) -> RuleResult:
        """Score = share of the (3 or 4) sub-checks passed."""
        n = int(args.get("ngram", self.default("ngram")))
        max_repeats = int(args.get("max_ngram_repeats", self.default("max_ngram_repeats")))
        min_d2 = float(args.get("min_distinct_2", self.default("min_distinct_2")))
        tokens = words(response)
        failures, checks = [], 3
        count, gram = _worst_ngram(tokens, n)
        if count > max_repeats:
            failures.append(f"{n}-gram {gram!r} occurs {count} times (max {max_repeats})")
        copies, unit = _worst_tandem(tokens, n)
        if copies > max_repeats:
            failures.append(f"{unit!r} repeated {copies} times in a row (max {max_repeats})")
        if len(tokens) >= MIN_WORDS_FOR_DISTINCT:
            checks += 1
            d2 = distinct_2(tokens)
            if d2 < min_d2:
                failures.append(f"distinct-2 {d2:.2f} < {min_d2:.2f}")
        if not finished:
            failures.append("hit the token limit without stopping")
        if not failures:
            return RuleResult(True, 1.0, f"no repetition in {len(tokens)} words")
        return RuleResult(False, (checks - len(failures)) / checks, "; ".join(failures))


KIND = NoRepetition()
