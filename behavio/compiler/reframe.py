"""The ``reframed`` check split: a frame set's subjects asked in another frame library's frames.

A set's ``check`` cases hold out whole frames, but of the library it trained on, so they share its style
("Could you ... for me?" in ``requests``); users ask the same thing another way too ("How do I ...?"). A model
that learned a behavior from its templates passes the one and fails the other: a prefix scoped to booking
changes goes on every "How do I ...?" question, a refusal taught on requests lets the how-to form through.

Each library names the libraries its subjects read naturally in (its ``#% reframe: ...`` line: ``requests``
and ``howto`` each other's, ``problems`` the ``support`` frames). A frame set gets about ``split.reframed``
times as many cases as its own ``check`` split, in those libraries' frames that no set trains on, one subject
per frame (seeded), with its own rules. Its ``exclude`` leaves out the frames its subjects read oddly in,
whichever library they come from. Nothing here is trained on.

Off by default (``split.reframed: 0``): on three specs (session 28) these cases passed as often as the check
split's and missed the same failures the probes found, which were about subjects the spec never listed.
"""

from __future__ import annotations

import random
from collections import Counter

from behavio.compiler.expand import PromptRow, frame_partners, load_frames, normalize, render_frame, without_excluded
from behavio.compiler.issues import Issues
from behavio.spec.model import Spec


def reframed_rows(spec: Spec, rows: dict[str, list[PromptRow]], checked: Counter, trained: set[str],
                  probes: set[str], issues: Issues) -> list[PromptRow]:
    """The ``reframed`` rows of every frame set: ``checked`` counts each set's check cases, ``trained`` holds the
    phrasings of its training and validation rows (``frame:<library>:<frame>``); none equals a prompt of any set or
    a probe (``probes``, normalized)."""
    if spec.split.reframed <= 0:
        return []
    taken = {r.key for set_rows in rows.values() for r in set_rows} | probes
    out: list[PromptRow] = []
    for name, set_rows in rows.items():
        ps = spec.prompts[name]
        wanted = round(spec.split.reframed * checked[name])
        if ps.holdout or ps.frame_library is None or wanted <= 0:
            continue
        frames = [(library, frame) for library in frame_partners(ps.frame_library)
                  for frame in without_excluded(ps, load_frames(library) or [])
                  if f"frame:{library}:{frame}" not in trained]
        subjects = list(dict.fromkeys(r.subject for r in set_rows if r.subject))
        if not frames or not subjects:
            continue
        rng = random.Random(f"{spec.split.seed}:reframed:{name}")
        rng.shuffle(frames)
        rng.shuffle(subjects)
        for i, (library, frame) in enumerate(frames[:wanted]):
            subject = subjects[i % len(subjects)]
            text = render_frame(spec, name, frame, subject, issues)
            if text is None or normalize(text) in taken:
                continue
            taken.add(normalize(text))
            out.append(PromptRow(name, len(set_rows) + i, text, {"subject": subject, "frame": frame},
                                 f"frame:{library}:{frame}", subject=subject))
    return out
