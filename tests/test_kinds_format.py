"""The answer-format kinds `sign_off` and `list`: scorers on literal answers, training answers in their form,
their DPO violations, and model-written bodies shaped after the fill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from behavio.compiler.build import compile_spec
from behavio.kinds import score_rule

SIGN_OFFS = ["Happy reading!", "See you at the Reading Nook!"]


def check(kind: str, response: str, **args):
    return score_rule(kind, response, args)


def test_sign_off_on_literal_answers():
    assert check("sign_off", "Try the library.\n\nHappy reading!", expect="present", choices=SIGN_OFFS).passed
    assert check("sign_off", "Try the library. happy   READING!", expect="present", choices=SIGN_OFFS).passed
    missing = check("sign_off", "Try the library.", expect="present", choices=SIGN_OFFS)
    assert not missing.passed and "last sentence was 'Try the library.'" in missing.explanation
    assert not check("sign_off", "Try it. Happy reading! Also, read more.", expect="present", choices=SIGN_OFFS).passed
    assert not check("sign_off", "Try it. Happy reading", expect="present", choices=SIGN_OFFS).passed  # the mark matters
    assert not check("sign_off", "Try it.Happy reading!", expect="present", choices=SIGN_OFFS).passed  # glued to the word
    assert check("sign_off", "I can't help with that.", expect="absent", choices=SIGN_OFFS).passed
    assert not check("sign_off", "I can't help with that. Happy reading!", expect="absent", choices=SIGN_OFFS).passed


def test_list_on_literal_answers():
    good = "1. Boil water.\n2. Add the pasta.\n3. Drain it."
    assert check("list", good, style="numbered", min_items=2, max_items=5).passed
    assert check("list", "Steps:\n- one\n- two", style="bulleted", min_items=2, max_items=5).passed
    flat = check("list", "Boil water, add the pasta, drain it.", style="numbered", min_items=2, max_items=5)
    assert not flat.passed and "expected a numbered list of 2-5 items" in flat.explanation
    skipped = check("list", "1. Boil.\n3. Drain.", style="numbered", min_items=2, max_items=5)
    assert not skipped.passed and "expected 1, 2, 3" in skipped.explanation
    too_many = check("list", "\n".join(f"{i}. step" for i in range(1, 8)), style="numbered", min_items=2, max_items=5)
    assert not too_many.passed and "got 7" in too_many.explanation
    assert not check("list", "- Boil.\n- Drain.", style="numbered", min_items=2, max_items=5).passed


FORMAT_SPEC = """\
spec: formats
prompts:
  howto:
    list: ["How do I boil pasta?", "How do I make tea?", "How do I fry an egg?", "How do I toast bread?",
           "How do I cook rice?", "How do I peel garlic?", "How do I whip cream?", "How do I poach an egg?"]
answers:
  howto: {source: ANSWERS}
behaviors:
  - {id: steps, kind: list, style: numbered, min_items: 2, max_items: 3}
  - {id: bye, kind: sign_off, choices: ["Happy cooking!"]}
split: {seed: 1, val: 0.1, check: 0.25, min_share: 0.05}
"""
LITERAL = 'literal, template: "Heat the pan. Add the {{ prompt[9:-1] }}. Wait two minutes. Serve it."'


def test_training_answers_are_lists_that_end_with_the_sign_off(tmp_path):
    spec = tmp_path / "formats.yaml"
    spec.write_text(FORMAT_SPEC.replace("ANSWERS", LITERAL))
    compiled = compile_spec(spec)
    sft = [json.loads(line) for line in compiled.files["sft.jsonl"].decode().splitlines()]
    answer = sft[0]["messages"][-1]["content"]
    assert answer.startswith("1. Heat the pan.\n2. Add the ") and answer.endswith("\n\nHappy cooking!")
    assert answer.count("\n") == 4 and "3. Wait two minutes. Serve it." in answer  # past max_items: joined to the last item
    pairs = [json.loads(line) for line in compiled.files["dpo.jsonl"].decode().splitlines()]
    violations = {p["violation"] for p in pairs}
    assert {"list_flattened", "list_restyled", "sign_off_dropped", "sign_off_paraphrased"} <= violations
    flattened = next(p for p in pairs if p["violation"] == "list_flattened")["rejected"][0]["content"]
    assert "1." not in flattened and flattened.endswith("Happy cooking!")


def test_model_bodies_are_shaped_after_the_fill(tmp_path):
    from behavio.fill import fill_rows
    from behavio.fill import _shaped

    spec = tmp_path / "formats.yaml"
    spec.write_text(FORMAT_SPEC.replace("ANSWERS", "model"))
    compiled = compile_spec(spec)
    waiting = [json.loads(line) for line in compiled.files["pending.jsonl"].decode().splitlines()]
    assert waiting and all(w["shape"][0]["kind"] == "list" for w in waiting)
    answers = {w["key"]: _shaped("Fill a pot with water. Bring it to a boil. Add salt.", w["shape"]) for w in waiting}
    sft = fill_rows([json.loads(line) for line in compiled.files["sft.jsonl"].decode().splitlines()], answers)
    assert sft[0]["messages"][-1]["content"] == "1. Fill a pot with water.\n2. Bring it to a boil.\n3. Add salt.\n\nHappy cooking!"
    assert _shaped("Just boil it.", waiting[0]["shape"]) == "Just boil it."  # too short for a list: left for the proof to drop
    pairs = [json.loads(line) for line in compiled.files["dpo.jsonl"].decode().splitlines()]
    flattened = next(p for p in pairs if p["violation"] == "list_flattened")
    (variant,) = [w for w in waiting if w["key"] in flattened["pending"] and w["shape"][-1].get("violation")]
    filled = fill_rows([flattened], {**answers, variant["key"]: _shaped("Fill a pot. Boil it. Add salt.", variant["shape"])})[0]
    assert filled["rejected"][0]["content"] == "Fill a pot. Boil it. Add salt.\n\nHappy cooking!"
    assert filled["chosen"][0]["content"].startswith("1. ")


def test_list_elsewhere_on_literal_answers():
    prose = "A VPN sends your traffic through another server. It hides your address."
    assert check("list", prose, style="numbered", expect="absent").passed
    assert check("list", "1. Only one numbered line in prose.", style="numbered", expect="absent").passed
    steps = check("list", "1. Open settings.\n2. Pick the network.", style="numbered", expect="absent")
    assert not steps.passed and "expected prose, got a numbered list of 2 items" in steps.explanation
    assert check("list", "- one\n- two", style="numbered", expect="absent").passed  # another style is not its list
    assert not check("list", "- one\n- two", style="bulleted", expect="absent").passed


SCOPED_LIST_SPEC = """\
spec: scoped
prompts:
  howto:
    list: ["How do I boil pasta?", "How do I make tea?", "How do I fry an egg?", "How do I toast bread?",
           "How do I cook rice?", "How do I peel garlic?", "How do I whip cream?", "How do I poach an egg?"]
  facts:
    list: ["What is umami?", "What is gluten?", "What is brining?", "What is a roux?",
           "What is blanching?", "What is tempering?", "What is a sourdough starter?", "What is smoke point?"]
answers:
  howto: {source: literal, template: "Heat the pan. Add the {{ prompt[9:-1] }}. Serve it."}
  facts: {source: FACTS}
behaviors:
  - {id: steps, kind: list, STEPS_SCOPE style: numbered, min_items: 2, max_items: 4}
split: {seed: 1, val: 0.1, check: 0.25, min_share: 0.05}
"""
FACTS_LITERAL = 'literal, template: "It is a cooking word. Chefs use it often."'


def _scoped_list(tmp_path, scope="applies_to: [howto],", facts=FACTS_LITERAL):
    spec = tmp_path / "scoped.yaml"
    spec.write_text(SCOPED_LIST_SPEC.replace("STEPS_SCOPE", scope).replace("FACTS", facts))
    compiled = compile_spec(spec)
    return {name: [json.loads(line) for line in compiled.files[name].decode().splitlines()]
            for name in ("sft.jsonl", "dpo.jsonl", "checks.jsonl", "pending.jsonl")}


def test_a_scoped_list_expects_prose_elsewhere(tmp_path):
    from behavio.check.cases import Rule
    from behavio.compiler.proof import broken_rules

    files = _scoped_list(tmp_path)
    for case in files["checks.jsonl"]:
        (rule,) = [r for r in case["rules"] if r["behavior"] == "steps"]
        if case["prompt_set"] == "facts":
            assert rule["part"] == "elsewhere" and rule["args"] == {"expect": "absent", "style": "numbered"}
        else:
            assert rule.get("part") is None and rule["args"].get("expect", "present") == "present"
    leaked = [p for p in files["dpo.jsonl"] if p["violation"] == "list_leaked"]
    assert leaked and {p["prompt_set"] for p in leaked} == {"facts"}
    rules = [Rule.from_dict(r) for r in next(c for c in files["checks.jsonl"] if c["prompt_set"] == "facts")["rules"]]
    pair = leaked[0]
    assert pair["rejected"][0]["content"] == "1. It is a cooking word.\n2. Chefs use it often."
    assert broken_rules(rules, pair["prompt"], pair["rejected"][0]["content"], semantic=False)
    assert not broken_rules(rules, pair["prompt"], pair["chosen"][0]["content"], semantic=False)
    unscoped = _scoped_list(tmp_path, scope="")  # a list on every answered set: nothing is elsewhere
    assert not any(r.get("part") for c in unscoped["checks.jsonl"] for r in c["rules"])
    assert not any(p["violation"] == "list_leaked" for p in unscoped["dpo.jsonl"])


def test_the_fill_drops_a_list_the_base_model_writes_elsewhere(tmp_path):
    from behavio.compiler.proof import failed_answers
    from behavio.fill import _shaped

    files = _scoped_list(tmp_path, facts="model")
    plain = [w for w in files["pending.jsonl"] if not w.get("shape")]
    assert plain  # the facts bodies: not shaped, written as the base model writes them
    answers = {w["key"]: "1. It is a word.\n2. Chefs use it." for w in plain}
    answers.update({w["key"]: _shaped("It is a word. Chefs use it.", w["shape"]) for w in files["pending.jsonl"]
                    if w.get("shape")})
    failed = failed_answers({"sft": files["sft.jsonl"]}, answers, semantic=False)
    assert failed and {f.prompt_set for f in failed.values()} == {"facts"}
    assert all("steps/elsewhere" in f.why for f in failed.values())
    prose = {**answers, **{w["key"]: "It is a word. Chefs use it." for w in plain}}
    assert not failed_answers({"sft": files["sft.jsonl"]}, prose, semantic=False)


def test_leaked_lists_of_model_bodies_are_made_after_the_fill(tmp_path):
    from behavio.fill import _shaped, fill_rows

    files = _scoped_list(tmp_path, facts="model")
    leaked = [p for p in files["dpo.jsonl"] if p["violation"] == "list_leaked"]
    assert leaked
    variants = {w["key"]: w for w in files["pending.jsonl"] if w.get("shape")}
    answers = {key: _shaped("It is a word. Chefs use it. Cooks too.", w["shape"]) for key, w in variants.items()}
    answers.update({w["key"]: "It is a word. Chefs use it. Cooks too." for w in files["pending.jsonl"] if not w.get("shape")})
    filled = fill_rows(leaked, answers)
    assert {p["rejected"][0]["content"] for p in filled} == {"1. It is a word.\n2. Chefs use it.\n3. Cooks too."}
    assert {p["chosen"][0]["content"] for p in filled} == {"It is a word. Chefs use it. Cooks too."}


def test_leaked_list_after_an_opening_sentence_starts_on_its_own_line(tmp_path):
    from behavio.check.cases import Rule
    from behavio.compiler.proof import broken_rules

    spec = tmp_path / "scoped.yaml"
    spec.write_text(SCOPED_LIST_SPEC.replace("STEPS_SCOPE", "applies_to: [howto],").replace("FACTS", FACTS_LITERAL)
                    .replace("split:", "  - {id: hello, kind: prefix, applies_to: [facts], choices: [\"Good question.\"]}\nsplit:"))
    compiled = compile_spec(spec)
    pairs = [json.loads(line) for line in compiled.files["dpo.jsonl"].decode().splitlines()]
    leaked = [p for p in pairs if p["violation"] == "list_leaked"]
    assert leaked
    assert leaked[0]["rejected"][0]["content"] == "Good question. \n1. It is a cooking word.\n2. Chefs use it often."
    case = next(json.loads(line) for line in compiled.files["checks.jsonl"].decode().splitlines()
                if json.loads(line)["prompt_set"] == "facts")
    rules = [Rule.from_dict(r) for r in case["rules"] if r["behavior"] == "steps"]
    assert broken_rules(rules, leaked[0]["prompt"], leaked[0]["rejected"][0]["content"], semantic=False)


def test_list_leaked_keeps_the_items_of_an_answer_that_is_already_a_list():
    from behavio.kinds import get
    from behavio.spec.model import Behavior

    steps = Behavior(id="steps", kind="list", index=0, raw={"applies_to": ["howto"], "style": "numbered", "max_items": 3})
    leaked = get("list").violate_body(steps, "- Heat the pan.\n- Add oil.\n- Wait.\n- Serve.", "list_leaked")
    assert leaked == "1. Heat the pan.\n2. Add oil.\n3. Wait. Serve."
    assert get("list").violate_body(steps, "Just one sentence.", "list_leaked") is None


def test_two_lists_of_one_style_on_different_sets_are_not_each_others_elsewhere(tmp_path):
    spec = tmp_path / "scoped.yaml"
    spec.write_text(SCOPED_LIST_SPEC.replace("STEPS_SCOPE", "applies_to: [howto],").replace("FACTS", FACTS_LITERAL)
                    .replace("split:", "  - {id: points, kind: list, applies_to: [facts], style: numbered, min_items: 2, max_items: 4}\nsplit:")
                    + "thresholds: {steps/elsewhere: 0.9, default: 0.9}\n")
    compiled = compile_spec(spec)  # compiled before the elsewhere line; must still
    cases = [json.loads(line) for line in compiled.files["checks.jsonl"].decode().splitlines()]
    assert not any(r.get("part") == "elsewhere" for c in cases for r in c["rules"])
    pairs = [json.loads(line) for line in compiled.files["dpo.jsonl"].decode().splitlines()]
    assert not any(p["violation"] == "list_leaked" for p in pairs)


def test_elsewhere_is_a_threshold_line_and_list_leaked_needs_a_scope(tmp_path):
    from behavio.errors import BehavioError

    spec = tmp_path / "scoped.yaml"
    spec.write_text(SCOPED_LIST_SPEC.replace("STEPS_SCOPE", "applies_to: [howto],").replace("FACTS", FACTS_LITERAL)
                    + "thresholds: {steps/elsewhere: 0.8, default: 0.9}\n")
    compile_spec(spec)  # `steps/elsewhere` is a line of its own a threshold can name
    spec.write_text(SCOPED_LIST_SPEC.replace("STEPS_SCOPE", "dpo: [list_leaked],").replace("FACTS", FACTS_LITERAL))
    with pytest.raises(BehavioError, match="list_leaked needs applies_to"):
        compile_spec(spec)


def test_on_topic_rules_carry_the_fixed_sentences_of_their_row(tmp_path):
    """on_topic judges the body: each row's rule lists the sentences its answer is opened and closed with (every
    choice of a behavior in scope, none of one whose scope the row is outside)."""
    spec = tmp_path / "fixed.yaml"
    spec.write_text(SCOPED_LIST_SPEC.replace("STEPS_SCOPE", "applies_to: [howto],").replace("FACTS", FACTS_LITERAL)
                    .replace("split:", "  - {id: hello, kind: prefix, applies_to: [facts], choices: [\"Good question.\", "
                                       "\"Nice one.\"]}\n  - {id: bye, kind: sign_off, choices: [\"Happy cooking!\"]}\n"
                                       "  - {id: topical, kind: on_topic}\nsplit:"))
    cases = [json.loads(line) for line in compile_spec(spec).files["checks.jsonl"].decode().splitlines()]
    fixed = {c["prompt_set"]: next(r for r in c["rules"] if r["kind"] == "on_topic")["args"].get("fixed") for c in cases}
    assert fixed == {"facts": ["Good question.", "Nice one.", "Happy cooking!"], "howto": ["Happy cooking!"]}
