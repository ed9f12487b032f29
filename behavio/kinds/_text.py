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


def without_end_phrases(text: str, phrases: list[str]) -> str:
    """``text`` stripped, without any of ``phrases`` it opens or closes with (as :func:`starts_with_phrase` and
    :func:`ends_with_phrase` match them: whitespace, curly quotes and case aside), repeatedly: the body a
    prefix and a sign-off were put around."""
    patterns = [r"\s+".join(re.escape(w) for w in phrase.translate(_QUOTES).split()) for phrase in phrases]
    patterns = [p for p in patterns if p]
    text = text.strip()
    while True:
        straight = text.translate(_QUOTES)
        for pattern in patterns:
            if m := re.match(pattern + r"(?=\s|$)", straight, re.IGNORECASE):
                text = text[m.end():].strip()
                break
            if m := re.search(r"(?<!\S)" + pattern + r"$", straight, re.IGNORECASE):
                text = text[:m.start()].strip()
                break
        else:
            return text


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


_LIST_MARK = re.compile(r"^(\d+[.)]|[-*\u2022])$")


def is_list_mark(piece: str) -> bool:
    """True for a piece :func:`sentences` split off that is only a list number or bullet ("1.", "2)", "-")."""
    return bool(_LIST_MARK.match(piece.strip()))


def sentence_ends(text: str) -> list[int]:
    """Where each sentence of ``text`` ends (as :func:`sentences` splits it, a lone list number like ``1.`` joined
    to the sentence after it): ``text[:ends[k - 1]]`` is its first ``k`` sentences."""
    ends, start, pending_mark = [], 0, False
    for m in list(_SENTENCE_END.finditer(text)) + [None]:
        end = m.end() if m is not None else len(text)
        piece = text[start:end].strip()
        start = end
        if not piece:
            continue
        if is_list_mark(piece):
            pending_mark = True
            continue
        pending_mark = False
        ends.append(len(text[:end].rstrip()))
    if pending_mark:
        ends.append(len(text.rstrip()))
    return ends


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (or all of it when it has no sentence end)."""
    found = sentences(text, limit=1)
    return found[0] if found else ""


def last_sentence(text: str) -> str:
    """The last sentence of ``text`` (or all of it when it has no sentence end)."""
    found = sentences(text)
    return found[-1] if found else ""


def excerpt(text: str, limit: int = 80, *, lines: bool = False) -> str:
    """A short quoted one-line excerpt of ``text`` for explanations; ``lines`` keeps line breaks, shown as ``\\n``
    (for rules about lines: a pattern anchored at ``^``, a header)."""
    flat = "\n".join(" ".join(line.split()) for line in text.strip().split("\n")) if lines else " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "\u2026")


def words(text: str) -> list[str]:
    """Lowercased word tokens (letters, digits, underscores, apostrophes)."""
    return _WORD.findall(text.translate(_QUOTES).lower())


NEAR_MISS = "got a near miss"  # how a scorer's explanation says it (the scorecard counts them per line)


def near_miss(expected: str, got: str, *, min_ratio: float = 0.75, most: int = 3) -> str | None:
    """How ``got`` differs from ``expected`` word by word, when it is a near miss (a word or two changed, missing or
    added; compared normalized), e.g. ``'cannot' instead of "can't"; missing 'please'``; None when it is not one."""
    import difflib

    want, have = expected.split(), got.split()
    matcher = difflib.SequenceMatcher(a=[normalize(w) for w in want], b=[normalize(w) for w in have], autojunk=False)
    if matcher.ratio() < min_ratio:
        return None
    changes = []
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        wanted, written = " ".join(want[a0:a1]), " ".join(have[b0:b1])
        if op == "replace":
            changes.append(f"{written!r} instead of {wanted!r}")
        elif op == "delete":
            changes.append(f"missing {wanted!r}")
        elif op == "insert":
            changes.append(f"extra {written!r}")
    if not changes:
        return None
    more = f"; and {len(changes) - most} more" if len(changes) > most else ""
    return "; ".join(changes[:most]) + more
