"""Unit tests for the ``no_repetition`` rule. Run: pytest tests/test_rules_repetition.py"""

import pytest

from behavio.kinds import score_rule

PARAGRAPH = (
    "Photosynthesis is the process plants use to turn sunlight, water and carbon dioxide into glucose "
    "and oxygen. It happens mainly in the chloroplasts of leaf cells, where chlorophyll absorbs red and "
    "blue light. The light reactions split water and make ATP, and the Calvin cycle then fixes carbon "
    "into sugars that the plant uses to grow."
)


def check(response, finished=True, **args):
    return score_rule("no_repetition", response, args, {}, finished)


@pytest.mark.parametrize("response", [
    PARAGRAPH,
    "Yes.",
    "Paris is the capital of France.",
    "Your question shows sharp thinking. " + PARAGRAPH,
    "It is what it is, and that is that.",
])
def test_normal_text_passes(response):
    result = check(response)
    assert result.passed and result.score == 1.0, result.explanation


@pytest.mark.parametrize("response", [
    "and and and and and",
    "Magnets attract iron and and and and and and and and and and and and and and and and and and and",
    "and " * 200,
])
def test_word_loops_fail(response):
    result = check(response)
    assert not result.passed and "repeated" in result.explanation


def test_sentence_loop_fails_on_ngram_count():
    result = check("The dog is nice. The dog is nice. The dog is nice. The dog is nice.")
    assert not result.passed
    assert "4-gram 'the dog is nice' occurs 4 times (max 3)" in result.explanation


def test_three_repeats_are_allowed_by_default():
    assert check("The dog is nice. The dog is nice. The dog is nice.").passed


def test_short_unit_loop_fails():
    result = check("I think I think I think I think so.")
    assert not result.passed and "'i think' repeated 4 times in a row" in result.explanation


def test_low_distinct_2_fails_on_long_cycling_text():
    # each 4-gram occurs at most 3 times and nothing repeats back to back,
    # but the text keeps cycling through the same few bigrams
    words = "red blue green red green blue blue red green green red blue".split()
    text = " ".join(words * 3)
    result = check(text, max_ngram_repeats=3)
    assert not result.passed and "distinct-2" in result.explanation
    assert check(text, min_distinct_2=0.2).passed


def test_distinct_2_ignored_below_20_words():
    assert check("red blue red green blue green red", min_distinct_2=0.99).passed


def test_token_limit_fails_even_without_loops():
    result = check(PARAGRAPH, finished=False)
    assert not result.passed and result.score == 0.75
    assert "hit the token limit without stopping" in result.explanation


def test_args_change_limits():
    assert not check("The dog is nice. The dog is nice.", ngram=2, max_ngram_repeats=1).passed
    assert check("The dog is nice. The dog is nice. The dog is nice. The dog is nice.", max_ngram_repeats=5).passed
