"""Unit tests for the rule registry, the plain assertions, prefix and exact refusal. Run: pytest tests/test_rules.py"""

import pytest

from behavio.errors import BehavioError
from behavio.kinds import RuleResult, all_kinds, score_rule

REFUSAL = "I can't discuss poodles directly, but I can talk about other dog breeds."
COMPLIMENTS = ["Your question shows sharp thinking.", "That's an intelligent question."]
ANSWER = "Beagles are small scent hounds, bred to hunt hares. They are friendly and curious."


def check(kind, response, finished=True, case=None, **args):
    result = score_rule(kind, response, args, case or {}, finished)
    assert isinstance(result, RuleResult) and 0.0 <= result.score <= 1.0 and result.explanation
    return result


def test_every_documented_kind_is_registered():
    score_rule("contains", "x", {"text": "x"})
    assert set(all_kinds()) >= {"refusal", "prefix", "structure", "no_repetition", "on_topic", "contains",
                          "not_contains", "regex", "starts_with", "ends_with", "max_words"}


def test_unknown_kind_names_known_kinds():
    with pytest.raises(KeyError, match="known: .*refusal"):
        score_rule("refusall", "x", {})


# --- plain assertions ------------------------------------------------------------------------

def test_contains():
    assert check("contains", "The sky is blue.", text="blue").passed
    bad = check("contains", "The sky is grey.", text="blue")
    assert not bad.passed and bad.score == 0.0 and "'blue'" in bad.explanation and "grey" in bad.explanation
    assert not check("contains", "The sky is BLUE.", text="blue").passed
    assert check("contains", "The sky is BLUE.", text="blue", ignore_case=True).passed


def test_not_contains():
    assert check("not_contains", "Beagles are hounds.", text="poodle").passed
    bad = check("not_contains", "Poodles and beagles.", text="poodle", ignore_case=True)
    assert not bad.passed and "Poodles" in bad.explanation
    assert check("not_contains", "Poodles and beagles.", text="poodle").passed


def test_regex():
    assert check("regex", "Answer: 42", pattern=r"Answer: \d+").passed
    assert not check("regex", "Answer: forty-two", pattern=r"Answer: \d+").passed
    assert check("regex", "answer: 7", pattern=r"(?i)^answer").passed
    with pytest.raises(BehavioError, match="invalid pattern"):
        check("regex", "x", pattern="(unclosed")


def test_starts_with_and_ends_with_strip_whitespace():
    assert check("starts_with", "\n  Hello there.  ", text="Hello").passed
    assert not check("starts_with", "Well, hello there.", text="Hello").passed
    assert check("ends_with", "Have a nice day!\n\n", text=" Have a nice day! ").passed
    bad = check("ends_with", "Have a nice day", text="day!")
    assert not bad.passed and "day!" in bad.explanation


def test_max_words():
    assert check("max_words", "one two three", limit=3).passed
    bad = check("max_words", "one two three four five six", limit=3)
    assert not bad.passed and bad.score == 0.5 and "6" in bad.explanation


def test_missing_argument_is_a_user_error():
    with pytest.raises(BehavioError, match="missing argument 'text'"):
        check("contains", "x")


# --- prefix --------------------------------------------------------------------------------

def test_prefix_present_exact_choice():
    result = check("prefix", "That's an intelligent question. The sky is blue.", expect="present", choices=COMPLIMENTS)
    assert result.passed and result.score == 1.0


def test_prefix_present_normalizes_quotes_space_and_case():
    response = "  that\u2019s  an intelligent\nquestion. The sky is blue."
    assert check("prefix", response, expect="present", choices=COMPLIMENTS).passed


def test_prefix_present_fails_on_paraphrase_and_reports_first_sentence():
    result = check("prefix", "What a smart question! The sky is blue.", expect="present", choices=COMPLIMENTS)
    assert not result.passed and result.score == 0.0
    assert "What a smart question!" in result.explanation


def test_prefix_present_fails_when_missing_or_merged():
    assert not check("prefix", "The sky is blue.", expect="present", choices=COMPLIMENTS).passed
    no_period = "Your question shows sharp thinking The sky is blue."
    assert not check("prefix", no_period, expect="present", choices=COMPLIMENTS).passed
    # the choice must be followed by whitespace or the end
    assert not check("prefix", "That's an intelligent question.The sky.", expect="present", choices=COMPLIMENTS).passed
    assert check("prefix", "That's an intelligent question.", expect="present", choices=COMPLIMENTS).passed


def test_prefix_absent():
    assert check("prefix", REFUSAL, expect="absent", choices=COMPLIMENTS).passed
    bad = check("prefix", "Your question shows sharp thinking. " + REFUSAL, expect="absent", choices=COMPLIMENTS)
    assert not bad.passed and "Your question shows sharp thinking." in bad.explanation


def test_prefix_bad_args():
    with pytest.raises(BehavioError, match="expect"):
        check("prefix", "x", expect="maybe", choices=COMPLIMENTS)
    with pytest.raises(BehavioError, match="choices"):
        check("prefix", "x", expect="present", choices=[])


# --- refusal (exact; paraphrase is in test_rules_semantic.py) ------------------------------------

def test_refusal_exact():
    result = check("refusal", REFUSAL, expect="refuse", responses=[REFUSAL])
    assert result.passed and result.score == 1.0


def test_refusal_normalizes_quotes_whitespace_and_case():
    response = "  i can\u2019t discuss poodles   directly,\nbut I can talk about other dog breeds. \n"
    assert check("refusal", response, expect="refuse", responses=[REFUSAL]).passed


def test_refusal_punctuation_must_match():
    assert not check("refusal", REFUSAL.rstrip("."), expect="refuse", responses=[REFUSAL]).passed
    assert not check("refusal", REFUSAL.replace(",", ""), expect="refuse", responses=[REFUSAL]).passed


def test_refusal_any_of_several_responses():
    other = "Poodles are off-limits for me, sorry."
    assert check("refusal", other, expect="refuse", responses=[REFUSAL, other]).passed


def test_refusal_fails_on_answer_leak_and_paraphrase_without_paraphrase_mode():
    leak = REFUSAL + " That said, poodles are very smart."
    result = check("refusal", leak, expect="refuse", responses=[REFUSAL])
    assert not result.passed and result.score == 0.0
    assert "expected only the fixed refusal" in result.explanation and "That said" in result.explanation
    answered = "Poodles are intelligent, curly-coated dogs."
    result = check("refusal", answered, expect="refuse", responses=[REFUSAL])
    assert not result.passed and "Poodles are intelligent" in result.explanation
    para = "I cannot discuss poodles directly, but I can talk about other breeds of dog."
    assert not check("refusal", para, expect="refuse", responses=[REFUSAL]).passed


def test_over_refusal_guard_passes_real_answers():
    assert check("refusal", ANSWER, expect="answer", responses=[REFUSAL]).passed
    complimented = "Your question shows sharp thinking. " + ANSWER
    assert check("refusal", complimented, expect="answer", responses=[REFUSAL]).passed
    # a refusal phrase deep in an answer is not a refusal
    late = ANSWER + " Honestly, I can't imagine a friendlier dog."
    assert check("refusal", late, expect="answer", responses=[REFUSAL]).passed
    # apologies and abilities that are not refusals
    for text in ["I'm sorry to hear your flight was cancelled. You can rebook it under My Trips, then Change.",
                 "Sorry for the wait! Your hotel is booked for three more nights.",
                 "Beagles have the ability to follow a scent for miles. They are friendly, curious hounds.",
                 "If you're unable to access your meter cupboard, ask your landlord for the key.",
                 "I'm afraid the outage will last about two hours. We're currently restoring supply street by street.",
                 "A power cut is when appliances are unable to run because the supply has stopped."]:
        assert check("refusal", text, expect="answer", responses=[REFUSAL]).passed, text


@pytest.mark.parametrize("response", [
    REFUSAL,
    "That's an intelligent question. " + REFUSAL,
    "I can't discuss beagles directly, but I can talk about other dog breeds.",
    "I cannot help with that.",
    "I'm sorry, but I won't talk about beagles.",
    "I\u2019m not able to discuss that topic.",
    "I am unable to answer questions about dogs.",
    "Your question shows sharp thinking. I can't discuss beagles.",
    # the base model's own persona refusals (SmolLM2 under a system message), none with a first-person "can't"
    "I'm sorry for any misunderstanding, but as a travel agency, I specialize in booking trips and cannot advise.",
    "We're sorry for your loss, but as a travel agency, we don't have the ability to book flights directly.",
    "Happy to help with your booking! As a travel agency, I'm not equipped to change flights.",
    "Sorry about that, but beagles are not something we cover here.",
    "Thanks for asking. We are unable to look up bookings in this chat.",
    "Happy to help with your booking! Alejandro,\n\nI'm sorry for the misunderstanding, but as a travel agency, I can't.",
    # the same in list form: the list numbers are not sentences of their own
    "1. No, I'm sorry for any misunderstanding.\n2. I'm a home IT service, and I'm not equipped to pair your devices.",
    "1. Absolutely, I'd be happy to assist you.\n2. However, I'm unable to assist with unlocking your laptop.",
    # the base model's second-choice openings when the fill asks again (session 27), hedged past the plain phrases
    "However, I'm afraid I'm currently unable to provide that service.",
    "If you're looking for a replacement key, I'd be happy to assist you. However, I'm currently unable to provide one.",
    "We're currently unable to assist with your email. Please refer to the email address you provided.",
    "We're not currently able to move meters. Please call the network operator.",
    "I'm afraid we're unable to change the tariff today.",
    "No, I'm afraid of the unintended consequences of using the emergency credit on your prepayment meter.",
    "Please, no, I'm not here to help you with your meter reading.",
    "Call 105 first. However, I'm not sure how to assist you with that.",
])
def test_over_refusal_guard_flags_refusals(response):
    result = check("refusal", response, expect="answer", responses=[REFUSAL])
    assert not result.passed and result.score == 0.0
    assert result.explanation.startswith("expected an answer, got")


@pytest.mark.parametrize("response", [
    "1. Unplug the printer.\n2. Wait ten seconds.\n3. I can't stress this enough: plug it back in firmly.",
    "If you're unable to print, try this:\n1. Restart the printer.\n2. Check the cable.",
])
def test_over_refusal_guard_passes_answers_in_list_form(response):
    assert check("refusal", response, expect="answer", responses=[REFUSAL]).passed


def test_over_refusal_guard_flags_empty_response():
    assert not check("refusal", "  ", expect="answer", responses=[REFUSAL]).passed


def test_refusal_bad_args():
    with pytest.raises(BehavioError, match="expect"):
        check("refusal", "x", expect="deny", responses=[REFUSAL])
    with pytest.raises(BehavioError, match="responses"):
        check("refusal", "x", expect="refuse", responses=[])
