"""Every warning behavio gives has a stable name: the spec silences it by name, ``--strict`` makes it an error.

A warning is advice about a spec that compiles (or a check that runs) but may not measure or train what
its author meant. Each one is named here with what it means; behavior kinds add their own through
``Kind.warning_names``. A spec lists the names it accepts under ``ignore_warnings``; ``--strict`` (validate,
compile, run, check) turns every warning that is not ignored into an error, for CI.
"""

from __future__ import annotations

CORE = {
    "prompts-deduplicated": "A prompt set lost empty or repeated prompts (case and spaces ignored); the rest remain.",
    "check-prompts-dropped": "Training or validation prompts equal to a check or probe prompt were dropped, so "
                             "nothing checked is trained on.",
    "recall-only": "A prompt set has fewer than three phrasings, too few to hold one out: its check cases are other "
                   "fills of trained phrasings, so their pass rate measures template recall.",
    "small-split": "A prompt set keeps half of its prompts or fewer for training once val and check took theirs: "
                   "too small for the split it asked for.",
    "control-markers": "Spec text or data holds chat control markers such as <|im_end|>; they are neutralized, never "
                       "used as control tokens.",
    "probe-repeated": "A probe is given twice in one prompt set; it is scored once.",
    "unprobed": "A refusal, its contrast, a behavior scoped to some sets or its absence elsewhere has no hand-written "
                "probe: its scorecard line measures the spec's own templates only.",
    "few-probes": "A refusal, its contrast, a behavior scoped to some sets or its absence elsewhere has fewer than 10 "
                  "hand-written probes: one probe is more than a tenth of its scorecard line's rate.",
    "refusal-copies-prompt": "More than 2/3 of the prompts a refusal answers name a plain word the refusal says (a "
                             "word of four letters or more, not a common one such as 'that', 'your' or 'help'): the "
                             "model can learn the refusal by copying the user's word, and swap in theirs.",
    "line-copies-prompt": "More than 2/3 of the prompts a fixed line (a prefix or sign-off) is added to name "
                          "a word the line says (four letters or more, not a common one): the model can learn the line as a template and swap in the user's "
                          "word.",
    "no-dpo-pairs": "A behavior whose kind derives DPO pairs got none (it matters when train.method has dpo).",
    "dpo-pairs-dropped": "Some DPO pairs of a behavior were not written: their rejected answer did not break its rule.",
    "responses-missing": "check --responses: the responses file has no answer for some check cases (they count as "
                         "failing).",
    "spec-changed": "check: a checkpoint was trained on another version of the spec.",
}


def catalog() -> dict[str, str]:
    """Every warning name and what it means: behavio's own, then the behavior kinds' (plugins included)."""
    from behavio import kinds

    out = dict(CORE)
    for kind in kinds.all_kinds().values():
        out.update(kind.warning_names)
    return out


def shipped_catalog() -> dict[str, str]:
    """The warnings of behavio and its built-in kinds (what docs/spec.md lists)."""
    from behavio import kinds

    out = dict(CORE)
    for name in kinds.BUILTIN:
        out.update(kinds.get(name).warning_names)
    return out


def check_name(name: str) -> str:
    """``name`` if it is a known warning; an internal error otherwise (every warning must be catalogued)."""
    if name not in catalog():
        raise ValueError(f"warning {name!r} is not in behavio.spec.warning_names (give it a name and a description)")
    return name


def shown(issue, strict: bool = False) -> str:
    """How a warning is printed: ``warning[name]: file:line:col: path: message`` (``error[name]`` under --strict)."""
    return f"{'error' if strict else 'warning'}[{issue.name}]: {issue}"
