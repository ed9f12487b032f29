"""Seeded split of every prompt set into train / val / check, holding out whole phrasings and whole subjects.

A check case must be phrased unlike anything trained on, or its pass rate measures template recall.
So the check split holds out whole *phrasings*: whole forms of an ``each`` (the axis whose values are
templates), whole frames of a frame library (the same frames in every set that uses the library, so
no held-out frame is trained in a minimal pair either), whole rows of a list or file. A set with fewer
than three phrasings cannot hold one out and keep two to learn from: its check cases are other fills
of trained phrasings, split ``recall`` instead of ``check``, and compile warns.

It also holds out whole *subjects* (what fills a phrasing: a frame's subject, the value of a cartesian
set's non-template axis), about ``split.subjects`` of every set that has at least five: no prompt of any
set that names a held-out subject (as a whole phrase, singular or plural) is trained on. Users ask about
things the spec never listed, and a check whose every subject was trained measures how well the listed
ones were learned, not where the behavior's boundary falls. Those prompts are split ``subject``, whatever
their phrasing, so the scorecard shows both ways of generalizing apart. With ``split.reframed`` (off by
default) a frame set's subjects are also asked in the frames of a library it does not train on (split
``reframed``, :mod:`behavio.compiler.reframe`). Validation rows are drawn from the trained phrasings and
subjects (they measure fitting).
Prompts that are checked (check, recall, subject, reframed or probes) are removed from train/val of every set, then
compile asserts there is no overlap.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field

from behavio.compiler.expand import PromptRow, normalize
from behavio.compiler.issues import Issues
from behavio.compiler.reframe import reframed_rows
from behavio.spec.model import Spec

MIN_PHRASINGS = 3  # one held out, two left to learn from
MIN_SUBJECTS = 5   # one held out, four left to learn from


@dataclass
class SplitRows:
    train: list[PromptRow]
    val: list[PromptRow]
    check: list[PromptRow]                              # held-out phrasings of trained subjects (split "check")
    recall: list[PromptRow] = field(default_factory=list)  # other fills of trained phrasings (split "recall")
    subject: list[PromptRow] = field(default_factory=list)  # prompts naming a held-out subject (split "subject")
    reframed: list[PromptRow] = field(default_factory=list)  # subjects in another library's frames (split "reframed")
    dropped_for_leak: int = 0
    held_subjects: list[str] = field(default_factory=list)  # subjects never trained on, as the spec writes them


def split_rows(spec: Spec, rows: dict[str, list[PromptRow]], issues: Issues) -> SplitRows:
    out = SplitRows([], [], [])
    held_frames = _held_out_frames(spec, rows)
    held_subjects = HeldSubjects(_held_out_subjects(spec, rows))
    out.held_subjects = held_subjects.names
    for name, set_rows in rows.items():
        train, val, check, recall, subject = _split_set(spec, name, set_rows, held_frames, held_subjects, issues)
        out.train += train
        out.val += val
        out.check += check
        out.recall += recall
        out.subject += subject
    trained = {r.phrasing for r in out.train + out.val}
    probes = {normalize(p) for probes in spec.probes.values() for p in probes}
    out.reframed = reframed_rows(spec, rows, Counter(r.set for r in out.check), trained, probes, issues)
    held_out = {r.key for r in out.check + out.recall + out.subject + out.reframed} | probes
    dropped = [r for r in out.train + out.val if r.key in held_out]
    out.train = [r for r in out.train if r.key not in held_out]
    out.val = [r for r in out.val if r.key not in held_out]
    out.dropped_for_leak = len(dropped)
    if dropped:
        _warn_dropped(dropped, probes, issues)
    leaked = {r.key for r in out.train + out.val} & held_out
    if leaked:  # cannot happen after the filter above; a hard guarantee, not a user error
        raise RuntimeError(f"check prompts leaked into training data: {sorted(leaked)[:3]}")
    return out


def _warn_dropped(dropped: list[PromptRow], probes: set[str], issues: Issues) -> None:
    """Name the training prompts that equal a held-out one, at the first one's prompt set."""
    shown = "; ".join(f"{r.label} {r.prompt!r} equals a {'probe' if r.key in probes else 'check prompt'}"
                      for r in dropped[:3])
    more = f" (and {len(dropped) - 3} more)" if len(dropped) > 3 else ""
    reword = "the subject or the probe" if any(r.key in probes for r in dropped) else "the subject"
    issues.warn("check-prompts-dropped", ("prompts", dropped[0].set),
                f"{len(dropped)} training/validation prompt(s) equal a held-out prompt and were dropped: {shown}{more}; "
                f"the held-out copy is kept; to train on both, reword {reword}")


def _held_out_frames(spec: Spec, rows: dict[str, list[PromptRow]]) -> set[str]:
    """The frames held out of training, chosen per library across every set that uses it."""
    by_library: dict[str, list[str]] = {}
    for name, set_rows in rows.items():
        if spec.prompts[name].holdout:
            continue
        for row in set_rows:
            if row.phrasing.startswith("frame:"):
                library = row.phrasing.split(":", 2)[1]
                by_library.setdefault(library, [])
                if row.phrasing not in by_library[library]:
                    by_library[library].append(row.phrasing)
    held: set[str] = set()
    for library, frames in sorted(by_library.items()):
        n = _held_count(len(frames), spec.split.check)
        held |= set(random.Random(f"{spec.split.seed}:frames:{library}").sample(frames, n)) if n else set()
    return held


class HeldSubjects:
    """The held-out subjects, and which prompts name one: as a whole phrase, case and spacing aside, with or
    without a plural ``s``/``es`` (``pug`` is named by "Are pugs loud?", ``my billing date`` by "Change my
    billing date.")."""

    def __init__(self, subjects: list[str]):
        self.names = sorted(subjects, key=normalize)
        self._pattern = _naming(subjects) if subjects else None

    def named_in(self, row: PromptRow) -> bool:
        if self._pattern is None:
            return False
        return any(self._pattern.search(normalize(text)) for text in _texts(row))

    def which(self, rows: list[PromptRow]) -> list[str]:
        """The held-out subjects ``rows`` name, as the spec writes them (for a warning: slower than ``named_in``)."""
        texts = [normalize(text) for row in rows for text in _texts(row)]
        return [s for s in self.names if any(_naming([s]).search(t) for t in texts)]


def _naming(subjects: list[str]) -> re.Pattern:
    """A text naming one of ``subjects``: as a whole phrase of normalized text, singular or plural (longest first)."""
    stems = sorted({_stem(normalize(s)) for s in subjects}, key=len, reverse=True)
    return re.compile(rf"\b(?:{'|'.join(map(re.escape, stems))})(?:s|es)?\b")


def _texts(row: PromptRow) -> tuple[str, ...]:
    """What a prompt row's user says: its prompt and the earlier user turns of its conversation."""
    return (row.prompt, *(t for _, t in row.history if t))


def _stem(subject: str) -> str:
    return subject[:-1] if subject.endswith("s") and not subject.endswith("ss") else subject


def _held_out_subjects(spec: Spec, rows: dict[str, list[PromptRow]]) -> list[str]:
    """The subjects held out of training, as the spec writes them: about ``split.subjects`` of each set that has
    at least MIN_SUBJECTS, in spec order; a set whose subjects another set already held counts those towards its
    share, so sets built on the same list hold out the same subjects. Each set holds the subjects that rank first
    by a seeded hash of their text, so adding a subject to a list moves no other one in or out (unless the share
    grows by one, or the new one ranks first). None when nothing is checked."""
    held: dict[str, str] = {}  # normalized -> as written
    if spec.split.check <= 0:
        return []
    for name, set_rows in rows.items():
        if spec.prompts[name].holdout:
            continue
        subjects = {normalize(r.subject): r.subject for r in set_rows if r.subject}
        wanted = _held_count(len(subjects), spec.split.subjects, MIN_SUBJECTS) - sum(s in held for s in subjects)
        if wanted > 0:
            fresh = [s for s in subjects if s not in held]
            ranked = sorted(fresh, key=lambda s: hashlib.blake2b(f"{spec.split.seed}:subject:{s}".encode(), digest_size=8).digest())
            held |= {s: subjects[s] for s in ranked[:wanted]}
    return list(held.values())


def _held_count(groups: int, share: float, least: int = MIN_PHRASINGS) -> int:
    """Groups (phrasings, subjects) to hold out of ``groups``: about ``share`` of them, at least one, leaving
    ``least - 1`` to learn from; none when there are fewer than ``least``."""
    if share <= 0 or groups < least:
        return 0
    return min(max(1, round(groups * share)), groups - (least - 1))


def _split_set(spec: Spec, name: str, rows: list[PromptRow], held_frames: set[str], held_subjects: HeldSubjects,
               issues: Issues):
    if spec.prompts[name].holdout:
        return [], [], list(rows), [], []
    wanted = sum(1 for share in (spec.split.val, spec.split.check) if share > 0) + 1
    if len(rows) < wanted:
        issues.add(("prompts", name), f"prompt set {name!r} has {len(rows)} distinct prompt(s); it needs at least {wanted} "
                   "to put one into each of train, val and check")
        return [], [], [], [], []
    phrasings = list(dict.fromkeys(r.phrasing for r in rows))
    held = {p for p in phrasings if p in held_frames}
    if not held or len(held) == len(phrasings):
        n = _held_count(len(phrasings), spec.split.check)
        held = set(random.Random(f"{spec.split.seed}:split:{name}").sample(phrasings, n)) if n else set()
    unseen = [held_subjects.named_in(r) for r in rows]  # names a subject never trained on
    subject = [r for r, new in zip(rows, unseen) if new]
    kept = [r for r, new in zip(rows, unseen) if not new]
    if held:
        check = [r for r in kept if r.phrasing in held]
        recall: list[PromptRow] = []
        rest = [r for r in kept if r.phrasing not in held]
    else:
        check, recall, rest = [], *_take(kept, spec.split.check, f"{spec.split.seed}:split:{name}")
        if spec.split.check > 0:
            issues.warn("recall-only", ("prompts", name), f"prompt set {name!r} has {len(phrasings)} phrasing(s), too few to hold one out: "
                        f"its {len(recall)} check case(s) are other fills of trained phrasings, so their rate measures "
                        f"template recall; give it at least {MIN_PHRASINGS} forms (an `each` axis of templates), use "
                        "frames, or add probes")
    val, train = _take(rest, spec.split.val, f"{spec.split.seed}:val:{name}", keep=1)
    if len(train) * 2 <= len(rows):
        subjects = _held_subjects_note(subject, held_subjects) if subject else ""
        issues.warn("small-split", ("prompts", name), f"prompt set {name!r} keeps {len(train)} of its {len(rows)} prompts "
                    f"for training ({len(check) + len(recall)} went to check{subjects}, {len(val)} to val): too small for "
                    f"split.check {spec.split.check}, split.subjects {spec.split.subjects} and split.val {spec.split.val}; "
                    "add prompts, or lower them")
    return train, val, check, recall, subject


def _held_subjects_note(subject: list[PromptRow], held_subjects: HeldSubjects) -> str:
    """What a small-split warning says of the prompts a held-out subject took: which subjects, and, when one sits
    inside a longer subject of these prompts, that rewording it would keep the longer one trained."""
    named = held_subjects.which(subject)
    note = (f", {len(subject)} name a held-out subject: {', '.join(map(repr, named[:4]))}"
            f"{' ...' if len(named) > 4 else ''}")
    own = {normalize(name) for name in named}
    inside = [r for r in subject if normalize(r.subject) not in own]  # the prompt's own subject is not the held one
    if inside:
        return (f"{note}; a subject held out of any set is held out of every prompt naming it, in longer subjects too "
                f"({inside[0].subject or inside[0].prompt!r} names one), so reword one that sits inside another")
    return f"{note} (held out by split.subjects: checked, never trained)"


def _take(rows: list[PromptRow], share: float, seed: str, keep: int = 1) -> tuple[list[PromptRow], list[PromptRow]]:
    """(a seeded ``share`` of ``rows``, the rest), in their original order; at least ``keep`` rows stay in the rest."""
    n = 0 if share <= 0 else max(1, round(len(rows) * share))
    n = max(0, min(n, len(rows) - keep))
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    taken = set(order[:n])
    return [r for i, r in enumerate(rows) if i in taken], [r for i, r in enumerate(rows) if i not in taken]
