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
A respelled prompt never equals another prompt (held out, validation or training): such a row keeps its prompt.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from behavio import kinds
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
    """Other ways users write ``word``: a hyphenated word joined or spaced, and an e-word cut to its last part
    ("e-bike": "ebike", "e bike", "bike"). Other cuts change the meaning ("non-refundable", "anti-theft", "x-ray"),
    and a plain word has no other form that keeps its sentence whole ("rooms" for "room"): none for those."""
    if "-" not in word:
        return []
    parts = word.lower().split("-")
    cut = [parts[-1]] if len(parts) == 2 and parts[0] == "e" and len(parts[1]) >= 3 else []
    return ["".join(parts), " ".join(parts)] + cut


def _pattern(word: str) -> re.Pattern:
    """``word`` as a whole word, any case, with the article before it if there is one (group ``article``)."""
    return re.compile(r"(?:(?<![\w-])(?P<article>an?) )?(?<![\w-])(?P<word>" + re.escape(word) + r")(?![\w-])",
                      re.IGNORECASE)


def _as_written(choice: str, original: str) -> str:
    """``choice`` in the case the user wrote ``original`` in (E-BIKE, E-bike, e-bike)."""
    if original.isupper():
        return choice.upper()
    return choice[:1].upper() + choice[1:] if original[:1].isupper() else choice


def respell(text: str, word: str, choice: str) -> str:
    """``text`` with every occurrence of ``word`` written ``choice``, in the user's case, with "a"/"an" before it
    following the new first letter ("an e-bike" -> "a bike")."""
    def sub(m: re.Match) -> str:
        new = _as_written(choice, m.group("word"))
        article = m.group("article")
        if article is None:
            return new
        fitting = "an" if new[:1].lower() in "aeiou" else "a"
        return _as_written(fitting, article) + " " + new
    return _pattern(word).sub(sub, text)


def respelled_prompt(text: str, words: list[str], rng: random.Random, taken: set[str]) -> str | None:
    """``text`` with each of ``words`` written another way (a seeded choice, then the others in turn), the first
    version no other prompt has (``taken``: normalized prompts); ``None`` when every version is taken."""
    versions = [text]
    for word in words:
        options = respellings(word)
        start = rng.randrange(len(options))
        versions = [respell(v, word, options[(start + k) % len(options)]) for v in versions for k in range(len(options))]
    return next((v for v in versions if normalize(v) not in taken), None)


def copyable_words(spec: Spec, examples: list[Example]) -> dict[str, tuple[tuple, float]]:
    """Words of a refusal's fixed answers (4+ letters, not a common word) that more than :data:`COPYABLE_SHARE` of
    its refused prompts name: lowercased word -> (the refusal's key path, that share). A refusal whose text a row
    fills in (Jinja: "... help with {{ row.subject }}") is meant to repeat the user's words, and has none."""
    refused: dict[str, list[Example]] = {}
    for ex in examples:
        if ex.refused_by is not None:
            refused.setdefault(ex.refused_by, []).append(ex)
    behaviors = {b.id: b for b in spec.behaviors}
    words: dict[str, tuple[tuple, float]] = {}
    for behavior, rows in sorted(refused.items()):
        kind = kinds.of(behaviors[behavior])
        fixed = {tuple(kind.whole_answers(behaviors[behavior], ex.args[behavior])) for ex in rows}
        if len(fixed) != 1:
            continue
        for word, share in _words_most_prompts_name(next(iter(fixed)), rows).items():
            words.setdefault(word, (rows[0].sources[behavior], share))
    return words


def _words_most_prompts_name(texts, rows: list[Example]) -> dict[str, float]:
    """Words of ``texts`` (4+ letters, not a common word) that more than :data:`COPYABLE_SHARE` of ``rows``'
    prompts name: lowercased word -> that share."""
    said = {w.lower() for text in texts for w in _WORD.findall(text)}
    out = {}
    for word in sorted(said):
        if len(word) < 4 or word in _COMMON:
            continue
        share = sum(1 for ex in rows if _pattern(word).search(ex.row.prompt)) / len(rows)
        if share > COPYABLE_SHARE:
            out[word] = share
    return out


LINE_KINDS = ("prefix", "sign_off")  # kinds that add a fixed sentence to an answer (a header is a label, not a sentence)


def copied_line_words(spec: Spec, examples: list[Example]) -> dict[tuple[str, str], tuple[tuple, float]]:
    """Words of a fixed line a behavior adds to its rows' answers (a prefix or sign-off with one sentence,
    :data:`LINE_KINDS`) that more than :data:`COPYABLE_SHARE` of those rows' prompts name:
    (behavior id, word) -> (its key path, that share). The model can learn such a line as a template with the
    user's word in it, and write "You can book a large screen room ..." for "You can book a study room ..."."""
    behaviors = {b.id: b for b in spec.behaviors if b.kind in LINE_KINDS}
    rows: dict[str, list[Example]] = {}
    for ex in examples:
        for behavior in behaviors:
            if behavior in ex.openings:
                rows.setdefault(behavior, []).append(ex)
    found: dict[tuple[str, str], tuple[tuple, float]] = {}
    for behavior, lines in sorted(rows.items()):
        said = {ex.openings[behavior].strip() for ex in lines}
        if len(said) != 1:
            continue
        for word, share in _words_most_prompts_name(said, lines).items():
            found[(behavior, word)] = (("behaviors", behavior, "choices"), share)
    return found


def warn_copied_lines(spec: Spec, train: list[Example], issues: Issues) -> None:
    """Warn (``line-copies-prompt``) about each fixed line that names a word most of its prompts name."""
    for (behavior, word), (path, share) in copied_line_words(spec, train).items():
        issues.warn("line-copies-prompt", path,
                    f"{share:.0%} of the training prompts {behavior!r} answers name {word!r}, as its fixed line "
                    f"does: the model can learn the line as a template with the user's word in it, and write whatever "
                    f"word the user used in its place; word the line without {word!r}, or phrase at least a third "
                    f"of those prompts without it")


def respelled(spec: Spec, train: list[Example], taken: set[str], issues: Issues) -> tuple[list[Example], dict]:
    """``train`` with half the prompts that name a copyable word respelled (seeded by the prompt), and a
    summary for the manifest: the words and how many prompts were respelled per prompt set. A respelled prompt
    never equals another prompt (``taken``: the normalized prompts of validation and every held-out split; the
    training prompts are added here). A copyable word with no respelling is warned about (``refusal-copies-prompt``)."""
    copyable = copyable_words(spec, train)
    for word, (path, share) in copyable.items():
        if not respellings(word):
            issues.warn("refusal-copies-prompt", path,
                        f"{share:.0%} of the training prompts this refusal answers name {word!r}, as the refusal does: "
                        f"the model can learn to write it by copying the user's word, and then writes whatever word the user "
                        f"used in its place; phrase at least a third of the trigger prompts without {word!r}, or word the "
                        f"refusal without it")
    words = sorted(w for w in copyable if respellings(w))
    if not words:
        return train, {"words": [], "prompts": {}}
    taken = taken | {normalize(ex.row.prompt) for ex in train}
    out, counts = [], Counter()
    for ex in train:
        named = [w for w in words if _pattern(w).search(ex.row.prompt)]
        rng = random.Random(f"{spec.split.seed}:respell:{ex.row.set}:{ex.row.index}:{ex.row.prompt}")
        text = respelled_prompt(ex.row.prompt, named, rng, taken) if named and rng.random() < RESPELLED_SHARE else None
        if text is None:
            out.append(ex)
            continue
        taken.add(normalize(text))
        out.append(ex.asked_as(text))
        counts[ex.row.set] += 1
    return out, {"words": words, "prompts": dict(sorted(counts.items()))}
