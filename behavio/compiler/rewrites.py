"""Deterministic rewrites of a prompt: the surface a real user adds (casual, typos, context, politeness).

Two disjoint families, so a check never measures the rewrites training saw:
- ``TRAINING`` augments training prompts (``augment:``): lowercase without the final mark, a casual
  opener, a polite wrapper, a line of context before the question, a thank-you after it;
- ``CHECK`` writes the ``paraphrase`` check split from held-out check cases: a typo in a long word,
  a different context preamble, an urgent or chatty opener, a question turned into a request.

Each rewrite is ``(text, rng) -> text`` and keeps what the user asks for; the rng is seeded from the
prompt, so the same spec always compiles to the same rewrites.
"""

from __future__ import annotations

import random
import re
from typing import Callable

Rewrite = Callable[[str, random.Random], str]
_LONG_WORD = re.compile(r"[A-Za-z]{6,}")


def _strip_end(text: str) -> str:
    return text.rstrip().rstrip("?.!")


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def casual_lowercase(text: str, rng: random.Random) -> str:
    return _strip_end(text).lower()


_OPENS_CASUALLY = re.compile(r"(?i)^\W*(hey|hi|hello|ok so|okay so|quick question)\b")


def casual_opener(text: str, rng: random.Random) -> str:
    """A casual opener before ``text``; ``text`` as it is when it opens so already ("hey, hi, something is off")."""
    if _OPENS_CASUALLY.match(text):
        return text
    return rng.choice(["hey, ", "hi! ", "ok so ", "quick question: ", "hello, "]) + _lower(text)


def polite_wrapper(text: str, rng: random.Random) -> str:
    lead = rng.choice(["Could you help me with something? ", "I hope you can help. ", "Sorry to bother you. "])
    return lead + text.rstrip() + rng.choice(["", " Thanks!", " Thank you."])


def context_before(text: str, rng: random.Random) -> str:
    lead = rng.choice(["I've been wondering about this for a while. ", "My friend and I were just talking about this. ",
                       "I'm trying to sort something out today. ", "This came up at work this morning. "])
    return lead + text.rstrip()


def thanks_after(text: str, rng: random.Random) -> str:
    return text.rstrip() + rng.choice([" Thanks in advance.", " Appreciate it!", " Thanks a lot."])


def typo(text: str, rng: random.Random) -> str:
    words = list(_LONG_WORD.finditer(text))
    if not words:
        return text.lower()
    m = words[rng.randrange(len(words))]
    i = m.start() + rng.randrange(1, len(m.group()) - 2)
    return text[:i] + text[i + 1] + text[i] + text[i + 2:]


def preamble(text: str, rng: random.Random) -> str:
    lead = rng.choice(["Long story short, ", "Okay, random thing, but ", "So here's my situation: ",
                       "Not sure who else to ask, but "])
    return lead + _lower(text)


def urgent(text: str, rng: random.Random) -> str:
    return rng.choice(["Need an answer fast: ", "URGENT - ", "pls help: "]) + text.rstrip()


def as_request(text: str, rng: random.Random) -> str:
    lead = rng.choice(["I'd like to know this: ", "Tell me, ", "Please answer this for me: "])
    return lead + _lower(text)


TRAINING: tuple[Rewrite, ...] = (casual_lowercase, casual_opener, polite_wrapper, context_before, thanks_after)
CHECK: tuple[Rewrite, ...] = (typo, preamble, urgent, as_request)


def rewrite(text: str, family: tuple[Rewrite, ...], index: int, salt: str) -> str:
    """The ``index``-th rewrite of ``text`` from ``family`` (cycling), seeded by the text and ``salt``."""
    rng = random.Random(f"{salt}:{index}:{text}")
    out = family[index % len(family)](text, rng)
    return out if out.strip() and out != text else family[(index + 1) % len(family)](text, rng)
