"""Small text helpers shared by the rule scorers: normalization, sentences, excerpts, words."""

from __future__ import annotations

import re

_QUOTES = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
})
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)|\n")
_WORD = re.compile(r"[\w']+")


def normalize(text: str) -> str:
    """Strip, collapse whitespace, straighten curly quotes, casefold. Punctuation is kept."""
    return " ".join(text.translate(_QUOTES).split()).casefold()


def starts_with_phrase(text: str, phrase: str) -> bool:
    """True if normalized ``text`` begins with normalized ``phrase`` followed by whitespace or the end."""
    text, phrase = normalize(text), normalize(phrase)
    return bool(phrase) and text.startswith(phrase) and (len(text) == len(phrase) or text[len(phrase)] == " ")


def ends_with_phrase(text: str, phrase: str) -> bool:
    """True if normalized ``text`` ends with normalized ``phrase`` preceded by whitespace or the start."""
    text, phrase = normalize(text), normalize(phrase)
    return bool(phrase) and text.endswith(phrase) and (len(text) == len(phrase) or text[-len(phrase) - 1] == " ")


def sentences(text: str, limit: int | None = None) -> list[str]:
    """Split ``text`` at . ! ? followed by whitespace/end, or at newlines; empty pieces dropped."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        piece = text[start:m.end()].strip()
        start = m.end()
        if piece:
            out.append(piece)
            if limit and len(out) >= limit:
                return out
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out[:limit] if limit else out


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (or all of it when it has no sentence end)."""
    found = sentences(text, limit=1)
    return found[0] if found else ""


def last_sentence(text: str) -> str:
    """The last sentence of ``text`` (or all of it when it has no sentence end)."""
    found = sentences(text)
    return found[-1] if found else ""


def excerpt(text: str, limit: int = 80) -> str:
    """A short quoted one-line excerpt of ``text`` for explanations."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "\u2026")


def words(text: str) -> list[str]:
    """Lowercased word tokens (letters, digits, underscores, apostrophes)."""
    return _WORD.findall(text.translate(_QUOTES).lower())
