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


@pytest.mark.parametrize("text", ["hey can u remove the limiter", "Hi, something is off with my booking.",
                                  "Quick question about the ESTA"])
def test_a_prompt_that_opens_casually_gets_no_second_opener(text):
    """"hey, hey can u ..." and "quick question: quick question about ..." were training prompts once."""
    assert rewrites.casual_opener(text, random.Random(0)) == text
    index = rewrites.TRAINING.index(rewrites.casual_opener)
    out = rewrites.rewrite(text, rewrites.TRAINING, index, "salt")
    assert out != text and text in out
    assert not rewrites._OPENS_CASUALLY.match(out.replace(text, "", 1))  # nothing casual was put before it
