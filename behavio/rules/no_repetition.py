"""Rule ``no_repetition``: degeneration guard (loops, repeated n-grams, running into the token limit).

On lowercased word tokens, fails when
- any word ``ngram`` occurs more than ``max_ngram_repeats`` times;
- a unit of 1..``ngram`` words repeats back to back more than ``max_ngram_repeats`` times
  ("and and and and", "I think I think I think I think");
- the distinct-2 ratio (distinct bigrams / bigrams) is below ``min_distinct_2`` (only from 20 words);
- ``finished`` is False: generation hit the token limit without stopping.
"""

from __future__ import annotations

from collections import Counter

from behavio.rules import RuleResult, register
from behavio.rules._text import words

MIN_WORDS_FOR_DISTINCT = 20


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


@register("no_repetition")
def no_repetition(response: str, args: dict, case: dict, finished: bool) -> RuleResult:
    """Score = share of the (3 or 4) sub-checks passed."""
    n = int(args.get("ngram", 4))
    max_repeats = int(args.get("max_ngram_repeats", 3))
    min_d2 = float(args.get("min_distinct_2", 0.3))
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
