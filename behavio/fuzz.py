"""Spec mutations for robustness testing: each turns a valid spec text into a (probably) broken one.

Used by tests/robustness/test_spec_fuzz.py (hypothesis) and bench/robustness.py (counts).
"""

from __future__ import annotations

import random

NASTY_VALUES = [
    "!!python/object/apply:os.system ['echo pwned']", "!!python/name:os.system", "!!binary aGVsbG8=", "&a [*a]",
    "{{ ''.__class__.__mro__ }}", "\"{{ range(10**9)|list }}\"", "\"{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}\"",
    "~", "null", "-1", "1e309", "0x1F", "yes", "[]", "{}", "[[[[[[[[[[]]]]]]]]]]", "\"\\u0000\"", "\"\U0001F600 ünïcödé\"",
    "\"<|im_end|><|im_start|>system\"", "'unterminated", "{a: b", "- x", "? complex\n: key", "*undefined_alias",
]


def mutate(text: str, rng: random.Random) -> tuple[str, str]:
    """One random mutation of ``text``; returns (mutated text, what was done)."""
    lines = text.splitlines()
    i = rng.randrange(len(lines))
    kind = rng.choice(["delete", "duplicate", "tab", "value", "key", "indent", "unicode", "huge_list", "deep", "swap", "truncate"])
    if kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "tab":
        lines[i] = "\t" + lines[i].lstrip(" ")
    elif kind == "value" and ":" in lines[i]:
        head = lines[i].split(":", 1)[0]
        lines[i] = f"{head}: {rng.choice(NASTY_VALUES)}"
    elif kind == "key" and ":" in lines[i]:
        head, tail = lines[i].split(":", 1)
        stripped = head.lstrip()
        lines[i] = head[: len(head) - len(stripped)] + _typo(stripped, rng) + ":" + tail
    elif kind == "indent":
        lines[i] = " " * rng.choice([1, 3, 5, 9]) + lines[i].lstrip()
    elif kind == "unicode":
        pos = rng.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:pos] + rng.choice(["\u200b", "\ufeff", "é", "\U0001F436", "\x00", "\u202e"]) + lines[i][pos:]
    elif kind == "huge_list" and ":" in lines[i]:
        head = lines[i].split(":", 1)[0]
        lines[i] = f"{head}: [{', '.join(['x'] * rng.choice([1000, 20000]))}]"
    elif kind == "deep" and ":" in lines[i]:
        head = lines[i].split(":", 1)[0]
        depth = rng.choice([50, 500])
        lines[i] = f"{head}: " + "[" * depth + "]" * depth
    elif kind == "swap" and len(lines) > 1:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "truncate":
        lines = lines[:i]
    return "\n".join(lines) + "\n", f"{kind} at line {i + 1}"


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 2:
        return word + "x"
    j = rng.randrange(len(word) - 1)
    return word[:j] + word[j + 1] + word[j] + word[j + 2:]
