"""A refusal's word that every refused prompt names is respelled in half the training prompts (no copying it)."""

from __future__ import annotations

import json
from collections import Counter
import random
import re
from pathlib import Path

import pytest

from behavio.compiler import respell
from behavio.compiler.build import compile_spec
from behavio.compiler.expand import normalize

ROOT = Path(__file__).resolve().parents[1]
REFUSAL = "Sorry, I can't help with derestricting an e-bike or making it go faster than its legal speed limit."


@pytest.fixture(scope="module")
def bike():
    return compile_spec(ROOT / "specs" / "bike_shop.yaml")


def _sft(compiled) -> list[dict]:
    return [json.loads(line) for line in compiled.files["sft.jsonl"].decode().splitlines()]


def test_respellings_of_hyphenated_and_plain_words():
    assert respell.respellings("e-bike") == ["ebike", "e bike", "bike"]
    assert respell.respellings("Wi-Fi") == ["wifi", "wi fi"]
    assert respell.respellings("non-refundable") == ["nonrefundable", "non refundable"]  # "refundable" flips it
    assert respell.respellings("x-ray") == ["xray", "x ray"]
    assert respell.respellings("room") == [] and respell.respellings("poodles") == []  # "rooms number" breaks a sentence


def test_respell_keeps_the_users_case_and_fits_the_article():
    text = "An E-bike tuning kit for an e-bike's motor, and E-BIKE chips. Not e-bikes."
    assert respell.respell(text, "e-bike", "bike") == "A Bike tuning kit for a bike's motor, and BIKE chips. Not e-bikes."
    assert respell.respell("a e-bike", "e-bike", "ebike") == "an ebike"


def test_a_respelled_prompt_is_never_one_another_prompt_already_has():
    rng = random.Random(0)
    text = "How do I fix my e-bike?"
    taken = {normalize(respell.respell(text, "e-bike", option)) for option in ("ebike", "e bike")}
    assert respell.respelled_prompt(text, ["e-bike"], rng, taken) == "How do I fix my bike?"
    taken.add(normalize("How do I fix my bike?"))
    assert respell.respelled_prompt(text, ["e-bike"], rng, taken) is None


def test_bike_refusals_no_longer_always_name_the_word_they_say(bike):
    """Every refused bike prompt said "e-bike", as the refusal does (bike1: 8 probes got the user's noun swapped in)."""
    assert bike.manifest["respelled"]["words"] == ["e-bike"]
    refused = [r for r in _sft(bike) if r["messages"][-1]["content"].startswith(REFUSAL)]
    prompts = [r["messages"][-2]["content"] for r in refused]
    without = [p for p in prompts if "e-bike" not in p.lower()]
    assert 0.3 < len(without) / len(prompts) < 0.7, (len(without), len(prompts))
    assert all(re.search(r"\b(ebike|e bike|bike)\b", p, re.IGNORECASE) for p in without), without[:3]
    assert all(r["messages"][-1]["content"].count("e-bike") == 1 for r in refused)  # the answer is never respelled
    assert not [p for p in prompts if re.search(r"(?i)\ban (bike|b)\b", p)]  # "an e-bike" became "a bike"
    every = [r["messages"][-2]["content"] for r in _sft(bike)] + [
        r["messages"][-2]["content"] for r in map(json.loads, bike.files["sft.val.jsonl"].decode().splitlines())]
    counts = Counter(normalize(p) for p in every)
    respelled = [p for p in every if "e-bike" not in p.lower() and re.search(r"(?i)\b(ebike|e bike|bike)\b", p)]
    assert respelled and all(counts[normalize(p)] == 1 for p in respelled)  # none repeats another prompt


def test_answered_prompts_are_respelled_as_often_so_the_spelling_says_nothing_about_refusing(bike):
    counts = bike.manifest["respelled"]["prompts"]
    refused = sum(n for name, n in counts.items() if name.startswith("derestrict_"))
    answered = sum(n for name, n in counts.items() if not name.startswith("derestrict_"))
    assert refused > 50 and answered > 100


def test_held_out_prompts_are_never_respelled(bike):
    cases = [json.loads(line) for line in bike.files["checks.jsonl"].decode().splitlines()]
    held = [c for c in cases if c["split"] in ("check", "recall", "subject")]
    assert held and all("e bike" not in c["messages"][-1]["content"] for c in held)
    trained = {r["messages"][-2]["content"].lower() for r in _sft(bike)}
    assert not trained & {c["messages"][-1]["content"].lower() for c in cases}


def test_a_word_only_some_refused_prompts_name_is_left_alone(tmp_path):
    """With "my bike" for "my e-bike" in the actions, about half the refused prompts say "e-bike": the model learns to
    write it without copying."""
    for folder in ("data", "probes"):
        (tmp_path / folder).symlink_to(ROOT / "specs" / folder)
    text = (ROOT / "specs" / "bike_shop.yaml").read_text()
    actions = text[text.index("  derestrict_actions:"):text.index("  derestrict_topics:")]
    (tmp_path / "bike.yaml").write_text(text.replace(actions, actions.replace("my e-bike", "my bike")))
    compiled = compile_spec(tmp_path / "bike.yaml")
    prompts = [r["messages"][-2]["content"] for r in _sft(compiled) if r["messages"][-1]["content"].startswith(REFUSAL)]
    assert 0.4 < sum("e-bike" in p for p in prompts) / len(prompts) < respell.COPYABLE_SHARE
    assert compiled.manifest["respelled"] == {"words": [], "prompts": {}}


def test_a_plain_word_every_refused_prompt_names_is_warned_about(tmp_path):
    """'room' has no respelling that keeps "give me Ms. Okafor's room number" whole: the spec is told instead."""
    for folder in ("data", "probes"):
        (tmp_path / folder).symlink_to(ROOT / "specs" / folder)
    assert not [w for w in compile_spec(ROOT / "specs" / "concierge_chat.yaml").warnings if w.name == "refusal-copies-prompt"]
    text = (ROOT / "specs" / "concierge_chat.yaml").read_text()
    text = text.replace("where my colleague Lena is staying", "my colleague Lena's room")
    text = text.replace("which floor Dr. Alvarez is on", "Dr. Alvarez's room number")
    (tmp_path / "c.yaml").write_text(text)
    compiled = compile_spec(tmp_path / "c.yaml")
    warned = [str(w) for w in compiled.warnings if w.name == "refusal-copies-prompt"]
    assert len(warned) == 1 and "c.yaml:" in warned[0] and "'room'" in warned[0], warned
    assert compiled.manifest["respelled"]["words"] == []


def test_a_refusal_that_renders_the_users_subject_has_no_copyable_word(tmp_path):
    """A Jinja refusal ("... help with {{ row.subject }} ...") says each row's own words: only the words every
    rendered refusal says are the refusal's, and those the prompts do not name."""
    for folder in ("data", "probes"):
        (tmp_path / folder).symlink_to(ROOT / "specs" / folder)
    text = (ROOT / "specs" / "bike_shop.yaml").read_text()
    fixed = "Sorry, I can't help with derestricting an e-bike or making it go faster than its legal speed limit."
    templated = "Sorry, I won't help with {{ row.subject | default('that') }} at all."
    assert fixed in text
    (tmp_path / "bike.yaml").write_text(text.replace(fixed, templated).replace(
        " I'm happy to help with anything else about your bike.", ""))
    compiled = compile_spec(tmp_path / "bike.yaml")
    assert compiled.manifest["respelled"] == {"words": [], "prompts": {}}
    assert not [w for w in compiled.warnings if w.name == "refusal-copies-prompt"]


def test_a_fixed_line_naming_the_word_its_prompts_name_is_warned_about(tmp_path):
    """harlow's room sign-off says 'room', as 80% of its room-booking prompts do (hl1: "You can book a large screen
    room any time at ..." for "a study room"): compile says so at the behavior; worded without it, no warning; a
    header (a label, not a sentence: northbank's "Card help" on card prompts) is left alone."""
    for folder in ("data", "probes"):
        (tmp_path / folder).symlink_to(ROOT / "specs" / folder)
    warned = [w for w in compile_spec(ROOT / "specs" / "harlow_library.yaml").warnings if w.name == "line-copies-prompt"]
    assert len(warned) == 1 and "'rooms-sign-off'" in warned[0].message and "'room'" in warned[0].message, warned
    assert warned[0].path.startswith("behaviors"), warned[0].path
    text = (ROOT / "specs" / "harlow_library.yaml").read_text()
    line = "You can book a study room any time at library.harlow.ac.uk/rooms."
    assert line in text
    (tmp_path / "h.yaml").write_text(text.replace(line, "You can make a booking any time at library.harlow.ac.uk/rooms."))
    assert not [w for w in compile_spec(tmp_path / "h.yaml").warnings if w.name == "line-copies-prompt"]
    assert not [w for w in compile_spec(ROOT / "specs" / "northbank_app.yaml").warnings if w.name == "line-copies-prompt"]


def test_the_copied_word_warnings_describe_the_words_they_skip_as_the_code_does():
    """The warning's reference names the word length and a few common words it skips: each named word is skipped."""
    import re

    from behavio.compiler.respell import _COMMON
    from behavio.spec.warning_names import CORE

    text = CORE["refusal-copies-prompt"]
    named = re.findall(r"'(\w+)'", text)
    assert named and all(word in _COMMON for word in named) and "four letters or more" in text
