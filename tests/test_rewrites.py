"""The prompt rewrites: what each adds, and that training and the paraphrase check never share a sentence."""

import random

import pytest

from behavio.compiler import rewrites

QUESTION = "Which fantasy series are finished by now?"


def _added_sentences(rewrite) -> set[str]:
    """Every text the rewrite adds around QUESTION, over many seeds."""
    out = set()
    for seed in range(200):
        text = rewrite(QUESTION, random.Random(seed))
        out.add(text.replace(QUESTION, "{q}"))
    return out


def test_training_and_check_rewrites_never_write_the_same_text():
    trained = set().union(*(_added_sentences(r) for r in rewrites.TRAINING))
    checked = set().union(*(_added_sentences(r) for r in rewrites.CHECK if r is not rewrites.typo))
    assert not trained & checked


@pytest.mark.parametrize("rewrite", rewrites.TRAINING + rewrites.CHECK, ids=lambda r: r.__name__)
def test_every_rewrite_keeps_the_question_and_changes_the_text(rewrite):
    text = rewrite(QUESTION, random.Random(7))
    assert text != QUESTION
    core = QUESTION.lower().rstrip("?")
    if rewrite is rewrites.typo:
        assert len(text) == len(QUESTION) and sorted(text) == sorted(QUESTION)
    else:
        assert core[1:] in text.lower().rstrip("?"), text
