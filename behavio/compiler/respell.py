"""Respell the word a fixed refusal shares with nearly every refused prompt, so the model cannot copy it.

When every refused training prompt names the word the refusal says ("derestrict my *e-bike*" ->
"Sorry, I can't help with derestricting an *e-bike* ..."), writing that word and copying it from the
prompt are the same thing to training, and the model learns to copy: asked about "my Rad Power bike"
it answers "... derestricting *a bike* ...", a fill-in-the-blank refusal that fails a verbatim check
(bike1: 8 of the 12 failing refusal probes). So every word of a whole answer (a refusal) that appears
in more than :data:`COPYABLE_SHARE` of the prompts it answers is *copyable*, and half of the training
prompts that name it -- in every prompt set, refused or answered, so the spelling says nothing about
refusing -- name it another way (:func:`respellings`: "ebike", "e bike", "bike"), the answers unchanged. Only
hyphenated words have respellings that keep the sentence whole; a plain copyable word is warned about.
A respelled prompt never equals a held-out one: such a row keeps its prompt.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter

from behavio.compiler.compose import Example
from behavio.compiler.expand import normalize
from behavio.compiler.issues import Issues
from behavio.spec.model import Spec

COPYABLE_SHARE = 2 / 3  # a refusal's word in more of its prompts than this is copyable (poodle: "poodles" in 52%)
RESPELLED_SHARE = 0.5   # of the training prompts that name a copyable word
_WORD = re.compile(r"[A-Za-z][A-Za-z-]*[A-Za-z]")
_COMMON = frozenset("about after again also before could does from have help here into just like make more most "
                    "much only other over please some such than that their them then there these they this those "
                    "very want what when where which while will with would your".split())


def respellings(word: str) -> list[str]:
    """Other ways users write ``word``: a hyphenated word joined, spaced or cut to its last part ("e-bike":
    "ebike", "e bike", "bike"). None for a plain word: its other forms ("rooms" for "room") would break the
    sentence it is in, and no list of synonyms is at hand."""
    if "-" not in word:
        return []
    parts = word.split("-")
    return ["".join(parts), " ".join(parts)] + ([parts[-1]] if len(parts[-1]) >= 3 else [])


def _pattern(word: str) -> re.Pattern:
    return re.compile(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", re.IGNORECASE)


def respell(text: str, words: list[str], rng: random.Random) -> str:
    """``text`` with every occurrence of each of ``words`` (whole words, any case) written one other way,
    keeping a capital first letter."""
    for word in words:
        choice = rng.choice(respellings(word))
        text = _pattern(word).sub(lambda m: choice[:1].upper() + choice[1:] if m.group()[:1].isupper() else choice, text)
    return text


def copyable_words(examples: list[Example]) -> dict[str, tuple[tuple, float]]:
    """Words of the refused rows' fixed answers (4+ letters, not a common word) found in more than
    :data:`COPYABLE_SHARE` of the prompts they answer: word -> (the refusal's key path, that share)."""
    refused: dict[str, list[Example]] = {}
    for ex in examples:
        if ex.refused_by is not None:
            refused.setdefault(ex.answer, []).append(ex)
    words: dict[str, tuple[tuple, float]] = {}
    for answer, rows in refused.items():
        for word in sorted({w for w in _WORD.findall(answer) if len(w) >= 4 and w.lower() not in _COMMON}):
            share = sum(1 for ex in rows if _pattern(word).search(ex.row.prompt)) / len(rows)
            if share > COPYABLE_SHARE:
                words.setdefault(word, (rows[0].sources[rows[0].refused_by], share))
    return words


def respelled(spec: Spec, train: list[Example], held_out: set[str], issues: Issues) -> tuple[list[Example], dict]:
    """``train`` with half the prompts that name a copyable word respelled (seeded by the prompt), and a
    summary for the manifest: the words and how many prompts were respelled per prompt set. A copyable word
    with no respelling is warned about (``refusal-copies-prompt``)."""
    copyable = copyable_words(train)
    for word, (path, share) in copyable.items():
        if not respellings(word):
            issues.warn("refusal-copies-prompt", path,
                        f"{share:.0%} of the training prompts this refusal answers name {word!r}, as the refusal does: "
                        f"the model can learn to write it by copying the user's word, and then swaps in theirs "
                        f"(\"... which suite ...\" for \"... which room ...\"); phrase at least a third of the trigger "
                        f"prompts without {word!r}, or leave it out of the refusal")
    words = sorted(w for w in copyable if respellings(w))
    if not words:
        return train, {"words": [], "prompts": {}}
    out, counts = [], Counter()
    for ex in train:
        named = [w for w in words if _pattern(w).search(ex.row.prompt)]
        rng = random.Random(f"{spec.split.seed}:respell:{ex.row.set}:{ex.row.index}:{ex.row.prompt}")
        if not named or rng.random() >= RESPELLED_SHARE:
            out.append(ex)
            continue
        text = respell(ex.row.prompt, named, rng)
        if normalize(text) in held_out:
            out.append(ex)
            continue
        row = dataclasses.replace(ex.row, prompt=text)
        out.append(dataclasses.replace(ex, row=row, prompt=ex.prompt[:-1] + [{"role": "user", "content": text}]))
        counts[ex.row.set] += 1
    return out, {"words": words, "prompts": dict(sorted(counts.items()))}
