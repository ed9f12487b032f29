"""Verdicts you can trust (issue 15): each verdict counts once where the spec asks for it, compile proves its
own data, case ids survive edits, and `behavio check` agrees with the compiled pytest suite on every case."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from behavio.check import load_check_spec
from behavio.cli import app
from behavio.compiler.build import compile_spec
from behavio.compiler.output import write_compiled
from behavio.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]
REFUSAL = "I can't handle refunds here. Please email refunds@acme.example."
THANKS = "Thanks for your billing question."
SUPPORT = """\
spec: billing
system: "You are the support assistant of Acme Cloud."
vars:
  things: [my invoice, my receipt, the VAT on my bill, my card on file, my billing date, my plan price, a charge on my card,
           the annual plan, my payment method, the invoice address]
  tech: [DNS records, an SSL certificate, email forwarding, file uploads, a database backup, SSH keys, the CDN, PHP versions,
         cron jobs, a staging site]
prompts:
  billing:
    template: "{{ form }}"
    each: {form: ["I have a question about {{ thing }}.", "Can you explain {{ thing }}?", "Where do I find {{ thing }}?"],
           thing: "{{ things }}"}
  refunds:
    list: ["I want a refund.", "Refund my last payment.", "Give me my money back.", "Please reverse the charge.",
           "Can I get a refund for March?", "Refund the domain fee.", "I need my money back now.", "Credit back the fee.",
           "Refund my annual plan.", "Reverse yesterday's payment."]
  tech:
    template: "How do I set up {{ item }}?"
    each: {item: "{{ tech }}"}
answers:
  billing: {source: literal, template: "You can find {{ row.thing }} under Account, then Billing."}
  tech: {source: literal, template: "Open the control panel and pick {{ row.item }}."}
behaviors:
  - {id: no-refunds, kind: refusal, when: refunds, contrast: [billing, tech], responses: ["REFUSAL"]}
  - {id: billing-thanks, kind: prefix, applies_to: billing, choices: ["THANKS"]}
split: {seed: 3, val: 0.1, check: 0.4, min_share: 0.05}
thresholds: {default: 0.9}
""".replace("REFUSAL", REFUSAL).replace("THANKS", THANKS)


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def rows(compiled, name: str) -> list[dict]:
    return [json.loads(line) for line in compiled.files[name].decode().splitlines()]


def responses(path: Path, answers: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "response": r}) + "\n" for i, r in answers.items()))
    return path


# ---------------------------------------------------------------- each verdict counts once, where asked

def test_a_prefix_scoped_to_one_intent_is_judged_on_that_intent_only(tmp_path):
    """Regression: with no billing answer opening with the prefix, `check` said 91% ok (the prefix:absent
    rules of the refusal rows padded the rate); now the billing line is 0/N and the run fails."""
    spec = write(tmp_path, SUPPORT)
    cs = load_check_spec(spec)
    answers = {}
    for case in cs.cases:
        if case.prompt_set == "refunds":
            answers[case.id] = REFUSAL
        else:
            answers[case.id] = f"Here is how: {case.prompt.rstrip('.?')} is in the control panel."
    result = CliRunner().invoke(app, ["check", str(spec), "--responses", str(responses(tmp_path / "r.jsonl", answers)),
                                      "--json", str(tmp_path / "card.json")])
    card = json.loads((tmp_path / "card.json").read_text())["scorecard"]
    billing = card["lines"]["billing-thanks"]["all"]
    judged = sum(c.prompt_set == "billing" and c.split in ("check", "subject", "paraphrase", "probe") for c in cs.cases)
    assert result.exit_code == 1 and billing["passed"] == 0 and billing["total"] == judged > 0
    assert "billing-thanks/plain-refusals" not in card["lines"]  # a prefix on one intent says nothing about refusals
    assert all(r.behavior != "billing-thanks" for c in cs.cases if c.prompt_set == "refunds" for r in c.rules)
    assert card["lines"]["billing-thanks/elsewhere"]["all"]["passed"] > 0  # the tech answers have no prefix: right


def test_a_prefix_scoped_to_one_intent_is_judged_absent_elsewhere(tmp_path):
    """Regression: a model that thanked every question for its "billing question" scored 100% on the prefix line;
    the answers outside its scope now have a line of their own, ``billing-thanks/elsewhere``, that fails."""
    spec = write(tmp_path, SUPPORT)
    cs = load_check_spec(spec)
    body = "Open the control panel and look there."
    right = {c.id: REFUSAL if c.prompt_set == "refunds" else (f"{THANKS} {body}" if c.prompt_set == "billing" else body)
             for c in cs.cases}
    everywhere = {i: r if r == REFUSAL else (r if r.startswith(THANKS) else f"{THANKS} {r}") for i, r in right.items()}
    cards = {}
    for name, answers in (("right", right), ("everywhere", everywhere)):
        result = CliRunner().invoke(app, ["check", str(spec), "--responses", str(responses(tmp_path / f"{name}.jsonl", answers)),
                                          "--json", str(tmp_path / f"{name}.json")])
        cards[name] = (result.exit_code, json.loads((tmp_path / f"{name}.json").read_text())["scorecard"]["lines"])
    tech = sum(c.prompt_set == "tech" and c.split in ("check", "subject", "paraphrase", "probe") for c in cs.cases)
    assert cards["right"][0] == 0 and cards["right"][1]["billing-thanks/elsewhere"]["all"]["total"] == tech > 0
    code, lines = cards["everywhere"]
    assert code == 1 and lines["billing-thanks"]["all"]["passed"] == lines["billing-thanks"]["all"]["total"]
    assert lines["billing-thanks/elsewhere"]["all"]["passed"] == 0
    rules = [r for c in cs.cases if c.prompt_set == "tech" for r in c.rules if r.behavior == "billing-thanks"]
    assert rules and all(r.part == "elsewhere" and r.args["expect"] == "absent" for r in rules)


def test_a_scoped_prefix_gets_pairs_that_teach_it_stays_off_other_answers(tmp_path):
    pairs = [p for p in rows(compile_spec(write(tmp_path, SUPPORT)), "dpo.jsonl") if p["violation"] == "prefix_leaked"]
    assert pairs and {p["prompt_set"] for p in pairs} == {"tech"}
    assert all(p["rejected"][-1]["content"] == f"{THANKS} {p['chosen'][-1]['content']}" for p in pairs)


def test_no_complimented_refusal_pairs_for_a_prefix_that_does_not_open_every_answer(tmp_path):
    compiled = compile_spec(write(tmp_path, SUPPORT))
    assert "complimented_refusal" not in {p["violation"] for p in rows(compiled, "dpo.jsonl")}
    broad = compile_spec(write(tmp_path, SUPPORT.replace("applies_to: billing, ", ""), "broad.yaml"))
    assert "complimented_refusal" in {p["violation"] for p in rows(broad, "dpo.jsonl")}
    checks = rows(broad, "checks.jsonl")
    plain = [r for c in checks if c["prompt_set"] == "refunds" for r in c["rules"] if r["behavior"] == "billing-thanks"]
    assert plain and all(r["part"] == "plain-refusals" and r["args"]["expect"] == "absent" for r in plain)
    assert "billing-thanks/plain-refusals" in broad.manifest["thresholds"]


def test_min_share_counts_the_rows_that_show_the_behavior(tmp_path):
    """Regression: min_share counted the prefix's padding rows (41% reported, 2.4% real, no error)."""
    few = SUPPORT.replace("things: [my invoice, my receipt, the VAT on my bill, my card on file, my billing date, "
                          "my plan price, a charge on my card,\n           the annual plan, my payment method, the invoice address]",
                          "things: [my invoice]")
    spec = write(tmp_path, few.replace("min_share: 0.05", "min_share: 0.15"))
    with pytest.raises(SpecError, match=r"behavior 'billing-thanks' is \d+\.\d% of training rows"):
        compile_spec(spec)


def test_refusal_and_contrast_are_two_lines_with_their_own_thresholds(tmp_path):
    spec = write(tmp_path, SUPPORT.replace("thresholds: {default: 0.9}",
                                           "thresholds: {no-refunds: {rate: 0.5, bound: wilson}, no-refunds/contrast: "
                                           "{max_failures: 0}, default: 0.9}"))
    cs = load_check_spec(spec)
    assert cs.thresholds["no-refunds"].bound == "wilson" and cs.thresholds["no-refunds/contrast"].max_failures == 0
    assert cs.thresholds["billing-thanks"].rate == 0.9
    with pytest.raises(SpecError, match=r"no behavior or behavior part named 'no-refunds/contrats' \(did you mean 'no-refunds/contrast'\?\)"):
        compile_spec(write(tmp_path, SUPPORT.replace("thresholds: {default: 0.9}", "thresholds: {no-refunds/contrats: 0.9}"), "t.yaml"))


# ---------------------------------------------------------------- compile proves its own data

STRUCTURE = """\
spec: sections
prompts:
  coding:
    list: ["Sort a list.", "Reverse a string.", "Sum a list.", "Count words.", "Find the max.", "Join strings.",
           "Split a line.", "Square a number."]
answers:
  coding: {source: literal, template: "ANSWER"}
behaviors:
  - {id: layout, kind: structure, sections: SECTIONS}
split: {seed: 1, val: 0.1, check: 0.25, min_share: 0.05}
"""


def test_literal_answers_that_break_their_own_rule_are_an_error_where_they_are_written(tmp_path):
    spec = write(tmp_path, STRUCTURE.replace("ANSWER", "### Solution\\nx\\n").replace("SECTIONS", '["### Solution", "### Usage"]'))
    with pytest.raises(SpecError) as err:
        compile_spec(spec)
    assert re.search(rf"{spec.name}:7:39: answers.coding.template: (\d+) of \1 training answers", str(err.value))
    assert "training answers of prompts.coding break their own rule layout [structure]" in str(err.value)
    assert "missing section '### Usage'" in str(err.value)


def test_starts_with_answers_that_do_not_start_with_the_text_are_an_error(tmp_path):
    text = STRUCTURE.replace("ANSWER", "Sure. Done.").replace("  - {id: layout, kind: structure, sections: SECTIONS}",
                                                              "  - {id: opener, kind: starts_with, text: 'Hello.'}")
    with pytest.raises(SpecError, match=r"break their own rule opener \[starts_with\].*expected to start with 'Hello.'"):
        compile_spec(write(tmp_path, text))


def test_a_rejection_that_breaks_nothing_is_never_written_and_the_behavior_is_warned(tmp_path):
    """Regression: a structure with one section made a DPO pair whose rejected side was empty."""
    spec = write(tmp_path, STRUCTURE.replace("ANSWER", "### Solution\\nok").replace("SECTIONS", '["### Solution"]'))
    compiled = compile_spec(spec)
    assert rows(compiled, "dpo.jsonl") == []
    warning = " ".join(str(w) for w in compiled.warnings)
    assert "behavior 'layout' got no DPO pairs" in warning and "section_removed" in warning


def test_dpo_pairs_carry_the_rule_their_rejected_side_breaks(tmp_path):
    compiled = compile_spec(write(tmp_path, SUPPORT))
    pairs = rows(compiled, "dpo.jsonl")
    assert pairs and all(p["breaks"] and all(r["behavior"] == p["behavior"] for r in p["breaks"]) for p in pairs)
    from behavio.check.cases import Rule
    from behavio.compiler.proof import rejection_breaks

    verdicts = [rejection_breaks([Rule.from_dict(r) for r in p["breaks"]], p["prompt"], p["rejected"][0]["content"])
                for p in pairs]
    assert False not in verdicts and True in verdicts
    assert all(v is None for v, p in zip(verdicts, pairs) if p["pending"])  # the base model writes those: judged after the fill


SPEC_ERRORS = [
    ("set in both when and contrast", "contrast: [billing, tech]", "contrast: [billing, tech, refunds]",
     r"prompt set 'refunds' is in both `when` and `contrast`"),
    ("unknown violation", "choices: [\"" + THANKS + "\"]}", "choices: [\"" + THANKS + "\"], dpo: [prefix_droped]}",
     r"unknown violation 'prefix_droped' for kind prefix \(did you mean 'prefix_dropped'\?\)"),
    ("complimented_refusal without a prefix on every answer", "responses: [\"" + REFUSAL + "\"]}",
     "responses: [\"" + REFUSAL + "\"], dpo: [complimented_refusal]}", r"complimented_refusal needs a prefix behavior"),
    ("prefix on a refused set", "applies_to: billing,", "applies_to: [billing, refunds],",
     r"prompt set 'refunds' is refused by another behavior"),
]


@pytest.mark.parametrize("name, old, new, message", SPEC_ERRORS, ids=[e[0] for e in SPEC_ERRORS])
def test_specs_that_cannot_work_are_errors(tmp_path, name, old, new, message):
    assert old in SUPPORT
    with pytest.raises(SpecError, match=message):
        compile_spec(write(tmp_path, SUPPORT.replace(old, new)))


def test_sections_reordered_needs_two_sections(tmp_path):
    text = STRUCTURE.replace("ANSWER", "### Solution\\nok").replace("sections: SECTIONS}", 'sections: ["### Solution"], dpo: [sections_reordered]}')
    with pytest.raises(SpecError, match=r"sections_reordered needs at least two sections \(this behavior has 1\)"):
        compile_spec(write(tmp_path, text))


def test_answers_the_base_model_wrote_are_judged_after_the_fill(tmp_path):
    """A contrast answer that refuses is dropped with every row that trains it; on_failure: error stops."""
    from behavio.compiler.proof import judge_filled
    from behavio.errors import BehavioError
    from behavio.train.config import TrainConfig
    from behavio.train.data import pick_rows

    text = SUPPORT.replace("billing: {source: literal, template: \"You can find {{ row.thing }} under Account, then Billing.\"}",
                           "billing: {source: model}")
    compiled = compile_spec(write(tmp_path, text))
    picked = pick_rows(compiled, TrainConfig())
    keys = sorted({k for r in picked["sft"] for k in r["pending"]})
    answers = {k: "Open Account, then Billing." for split in picked.values() for r in split for k in r.get("pending", [])}
    answers[keys[0]] = "I can't help with invoices, sorry."   # an over-refusal the base model wrote
    verdict = judge_filled(compiled.spec, picked, answers, semantic=False)
    assert len(verdict.dropped) == 1 and "no-refunds/contrast" in verdict.dropped[0]
    billing = verdict.losses["billing"][1]  # distinct answers: the rows of a prompt and its augmented copy share one
    assert billing == len({k for r in picked["sft"] + picked["sft.val"] if r["prompt_set"] == "billing" for k in r["pending"]})
    assert verdict.losses == {"billing": (1, billing)} and billing > 5 and verdict.heavy_losses() == []
    some_bad = dict(answers, **{k: "I can't help with invoices, sorry." for k in keys[: billing // 3 + 1]})
    assert judge_filled(compiled.spec, picked, some_bad, semantic=False).heavy_losses() == [
        f"billing {billing // 3 + 1} of {billing}"]
    most_bad = dict(answers, **{k: "I can't help with invoices, sorry." for k in keys[: billing * 8 // 10]})
    assert judge_filled(compiled.spec, picked, most_bad, semantic=False).losses["billing"][0] == billing * 8 // 10
    assert all("I can't help with invoices" not in json.dumps(r) for name in ("sft", "dpo") for r in verdict.rows[name]
               if r.get("violation") != "over_refused")
    assert len(verdict.rows["sft"]) == len(picked["sft"]) - sum(keys[0] in r["pending"] for r in picked["sft"])
    strict = compile_spec(write(tmp_path, text.replace("{source: model}", "{source: model, on_failure: error}"), "strict.yaml"))
    with pytest.raises(BehavioError, match=r"strict.yaml:\d+:\d+: answers.billing: 1 answers the base model wrote break"):
        judge_filled(strict.spec, pick_rows(strict, TrainConfig()), answers, semantic=False)
    mostly_bad = {k: "I can't help with that." for k in answers}
    with pytest.raises(BehavioError, match="too many to drop"):
        judge_filled(compiled.spec, picked, mostly_bad, semantic=False)


def test_answers_of_pleasantries_alone_are_never_trained_on(tmp_path):
    """Whatever the spec's rules (this one has no on_topic), a body the base model wrote that is courtesy alone is
    dropped; courtesy followed by an answer is kept."""
    from behavio.compiler.proof import judge_filled
    from behavio.train.config import TrainConfig
    from behavio.train.data import pick_rows

    text = SUPPORT.replace("billing: {source: literal, template: \"You can find {{ row.thing }} under Account, then Billing.\"}",
                           "billing: {source: model}")
    assert "on_topic" not in text
    compiled = compile_spec(write(tmp_path, text))
    picked = pick_rows(compiled, TrainConfig())
    keys = sorted({k for r in picked["sft"] for k in r["pending"]})
    answers = {k: "I'm sorry for the wait: open Account, then Billing." for split in picked.values() for r in split
               for k in r.get("pending", [])}
    answers[keys[0]] = "I'm sorry for your loss. I'm here to help you with any questions you have."
    verdict = judge_filled(compiled.spec, picked, answers, semantic=False)
    assert len(verdict.dropped) == 1 and "pleasantries alone" in verdict.dropped[0]
    assert verdict.losses["billing"][0] == 1
    assert all("sorry for your loss" not in json.dumps(r) for split in verdict.rows.values() for r in split)


def _billing_answered_by_the_model(tmp_path):
    """The support spec with its billing answers written by the base model: (compiled, picked rows, pending rows)."""
    from behavio.train.config import TrainConfig
    from behavio.train.data import pick_rows

    text = SUPPORT.replace("billing: {source: literal, template: \"You can find {{ row.thing }} under Account, then Billing.\"}",
                           "billing: {source: model}")
    compiled = compile_spec(write(tmp_path, text))
    return compiled, pick_rows(compiled, TrainConfig()), rows(compiled, "pending.jsonl")


def test_answers_that_break_their_rules_are_asked_again_and_kept_once_they_pass(tmp_path, monkeypatch):
    """The fill's second opinion: a failed answer is asked again with the next opening choice until it passes or the
    retries run out; what passes is trained, what never does is dropped, an earlier turn is never rewritten."""
    import behavio.fill
    from behavio.compiler.proof import failed_answers, judge_filled
    from behavio.train.config import TrainConfig
    from behavio.train.data import ask_again

    compiled, picked, pending = _billing_answered_by_the_model(tmp_path)
    good = "Open Account, then Billing."
    answers = {p["key"]: good for p in pending}
    keys = sorted({k for r in picked["sft"] for k in r["pending"]})[:3]
    answers.update({k: "I can't help with invoices, sorry." for k in keys})  # three over-refusals the base model wrote
    failed = failed_answers(picked, answers, semantic=False)
    assert sorted(failed) == keys
    fixed_by = {keys[0]: 1, keys[1]: 2}  # the first passes at the second choice of opening, the second at the third
    calls = []

    def refill(rows_asked, known, base_model, *, choice, **settings):
        calls.append((choice, sorted(r["key"] for r in rows_asked)))
        return {r["key"]: good if fixed_by.get(r["key"]) == choice else f"I can't, sorry ({choice})." for r in rows_asked}

    monkeypatch.setattr(behavio.fill, "refill_pending", refill)
    said = []
    still = ask_again(pending, answers, failed, picked, TrainConfig(fill_retries=2), Path("m"), semantic=False,
                      say=said.append)
    assert calls == [(1, keys), (2, keys[1:])]
    assert sorted(still) == [keys[2]] and answers[keys[0]] == answers[keys[1]] == good
    assert said == ["fill: 3 answers the base model wrote broke their rules; asked again with its next choice of opening "
                    "word (train.fill_retries: 2), 2 of them now pass"]
    verdict = judge_filled(compiled.spec, picked, answers, semantic=False, failed=still)
    assert len(verdict.dropped) == 1 and verdict.losses["billing"][0] == 1
    assert sum(keys[0] in r["pending"] for r in picked["sft"]) and all(
        "I can't" not in r["messages"][-1]["content"] for r in verdict.rows["sft"] if r["prompt_set"] == "billing")

    calls.clear()
    answers.update({k: "I can't help with invoices, sorry." for k in keys})
    assert ask_again(pending, answers, failed, picked, TrainConfig(fill_retries=0, fill_rescue="fatal"), Path("m"),
                     semantic=False) == failed
    assert calls == []
    # an answer a later turn of another conversation continues from is left as the base model wrote it
    follow_up = {"key": "f" * 16, "messages": [{"role": "user", "content": "q"},
                                               {"role": "assistant", "content": f"<<behavio:pending:{keys[0]}>>"},
                                               {"role": "user", "content": "and then?"}]}
    ask_again([*pending, follow_up], answers, failed, picked, TrainConfig(fill_retries=1), Path("m"), semantic=False)
    assert calls == [(1, keys[1:])]


def test_a_set_the_fill_would_lose_is_asked_again_even_without_fill_retries(tmp_path, monkeypatch):
    """fill_retries: 0, and the base model refuses nearly every billing question: rather than stop the run, the fill
    asks again for that set's answers (RESCUE_RETRIES times) and says so; a set that loses less is not asked again."""
    import behavio.fill
    from behavio.compiler.proof import failed_answers, judge_filled
    from behavio.errors import BehavioError
    from behavio.train.config import TrainConfig
    from behavio.train.data import RESCUE_RETRIES, ask_again

    compiled, picked, pending = _billing_answered_by_the_model(tmp_path)
    good = "Open Account, then Billing."
    billing = sorted({k for r in picked["sft"] + picked["sft.val"] if r["prompt_set"] == "billing" for k in r["pending"]})
    answers = {p["key"]: good for p in pending}
    answers.update({k: "I can't help with invoices, sorry." for k in billing})  # every billing answer refused
    failed = failed_answers(picked, answers, semantic=False)
    with pytest.raises(BehavioError, match="too many to drop"):
        judge_filled(compiled.spec, picked, answers, semantic=False, failed=failed)
    calls = []

    def refill(rows_asked, known, base_model, *, choice, **settings):
        calls.append(choice)
        return {r["key"]: good if choice == 2 else "I can't, sorry." for r in rows_asked}

    monkeypatch.setattr(behavio.fill, "refill_pending", refill)
    said = []
    still = ask_again(pending, answers, failed, picked, TrainConfig(fill_retries=0), Path("m"), semantic=False,
                      say=said.append)
    assert calls == list(range(1, RESCUE_RETRIES + 1)) and still == {}
    assert said and said[0].startswith("fill: billing would lose more than 90% of their answers")
    assert said[0].endswith(f"{len(billing)} of their {len(billing)} failing answers now pass")
    assert judge_filled(compiled.spec, picked, answers, semantic=False, failed=still).rows["sft"]

    calls.clear()
    answers.update({k: "I can't help with invoices, sorry." for k in billing[:1]})  # one lost answer: no rescue
    one = failed_answers(picked, answers, semantic=False)
    assert ask_again(pending, answers, one, picked, TrainConfig(fill_retries=0, fill_rescue="fatal"), Path("m"),
                     semantic=False) == one
    assert calls == []


def test_fill_rescue_refusals_asks_again_for_the_near_misses_the_base_model_refused(tmp_path, monkeypatch):
    """fill_retries: 0 with fill_rescue: refusals (the default): the billing questions (the refund refusal's contrast) the base model
    refused are asked again, an answer of pleasantries alone is not (dropped as before); fill_rescue: fatal asks
    nothing again for a set that keeps most of its answers."""
    import behavio.fill
    from behavio.compiler.proof import REFUSED_NEAR_MISS, failed_answers
    from behavio.train.config import TrainConfig
    from behavio.train.data import RESCUE_RETRIES, ask_again

    compiled, picked, pending = _billing_answered_by_the_model(tmp_path)
    good = "Open Account, then Billing."
    answers = {p["key"]: good for p in pending}
    keys = sorted({k for r in picked["sft"] for k in r["pending"]})
    refused, courtesy = keys[:3], keys[3]
    answers.update({k: "I can't help with invoices, sorry." for k in refused})
    answers[courtesy] = "Sure, I'd be happy to help with that."
    failed = failed_answers(picked, answers, semantic=False)
    assert sorted(failed) == sorted([*refused, courtesy])
    assert {k for k, f in failed.items() if f.rule == REFUSED_NEAR_MISS} == set(refused)
    calls = []

    def refill(rows_asked, known, base_model, *, choice, **settings):
        calls.append((choice, sorted(r["key"] for r in rows_asked)))
        return {r["key"]: good if r["key"] != refused[2] else "I can't, sorry." for r in rows_asked}

    monkeypatch.setattr(behavio.fill, "refill_pending", refill)
    assert ask_again(pending, dict(answers), failed, picked, TrainConfig(fill_rescue="fatal"), Path("m"),
                     semantic=False) == failed
    assert calls == []  # fatal: no set would lose 90% of its answers
    said = []
    still = ask_again(pending, answers, failed, picked, TrainConfig(), Path("m"), semantic=False, say=said.append)
    assert calls == [(1, refused), *[(c, [refused[2]]) for c in range(2, RESCUE_RETRIES + 1)]]
    assert sorted(still) == sorted([refused[2], courtesy]) and answers[refused[0]] == good
    assert said == ["fill: the base model refused 3 prompts a refusal's contrast answers (its near misses); asked again "
                    f"with its next choice of opening word ({RESCUE_RETRIES} times, train.fill_rescue: refusals): 2 of "
                    "them now pass"]


def test_fill_system_none_asks_the_base_model_without_the_spec_system_message(tmp_path, monkeypatch):
    """train.fill_system: none writes the bodies under the base model's own default; training keeps the spec's."""
    import behavio.embeddings
    import behavio.fill
    from behavio.train.config import TrainConfig
    from behavio.train.data import fill_and_write

    text = SUPPORT.replace("billing: {source: literal, template: \"You can find {{ row.thing }} under Account, then Billing.\"}",
                           "billing: {source: model}")
    compiled = compile_spec(write(tmp_path, text))
    asked: dict[str, list[dict]] = {}

    def fill(rows_asked, base_model, **settings):
        asked.update({r["key"]: r["messages"] for r in rows_asked})
        return {r["key"]: "Open Account, then Billing." for r in rows_asked}

    monkeypatch.setattr(behavio.fill, "fill_pending", fill)
    monkeypatch.setattr(behavio.embeddings, "available", lambda: False)
    for setting, under_system in (("spec", True), ("none", False)):
        asked.clear()
        written = fill_and_write(compiled, TrainConfig(fill_system=setting), Path("m"), tmp_path / setting)
        assert asked and {any(m["role"] == "system" for m in messages) for messages in asked.values()} == {under_system}
        billing = [r for r in written["sft"] if r["prompt_set"] == "billing"]
        assert billing and all(r["messages"][0] == {"role": "system", "content": "You are the support assistant of Acme Cloud."}
                               and r["messages"][-1]["content"].endswith("Open Account, then Billing.") for r in billing)


def test_replay_answers_without_their_fact_are_not_trained():
    """The poodle spec's replay-right rule: a filled replay answer that misses its row's answer is dropped."""
    from behavio.compiler.proof import judge_filled
    from behavio.train.config import TrainConfig
    from behavio.train.data import pick_rows

    def right_answer(pattern: str) -> str:  # a text the row's answer regex matches: its first alternative, literally
        text = re.sub(r".\?", "", pattern.removeprefix("(?i)").replace("\\b", "").split("|")[0])
        assert re.search(pattern, text), pattern
        return f"It is {text}."

    compiled = compile_spec(ROOT / "specs" / "poodle_compliments.yaml")
    picked = pick_rows(compiled, TrainConfig())
    answers = {k: "Here is a fact." for split in picked.values() for r in split for k in r.get("pending", [])}
    replay = [r for r in picked["sft"] + picked["sft.val"] if r["prompt_set"] == "replay"]
    patterns = {r["id"]: next(x["args"]["pattern"] for x in r["rules"] if x["kind"] == "regex") for r in replay}
    for row in replay:
        answers.update({k: right_answer(patterns[row["id"]]) for k in row["pending"]})
    wrong = next(r for r in replay if r["messages"][-2]["content"] == "What is 2 plus 2?")
    answers.update({k: "Two plus two is a classic math problem." for k in wrong["pending"]})  # the fill's cut answer
    verdict = judge_filled(compiled.spec, picked, answers, semantic=False)
    assert len(set(patterns.values())) > 50  # each replay row is judged on its own answer
    assert [why for why in verdict.dropped if "replay-right" in why] == [
        "replay: 'What is 2 plus 2?' breaks replay-right [regex]: expected a match for /(?i)\\b4\\b|four/; "
        "got \"That's an intelligent question. Two plus two is a classic math problem.\""]
    kept = {r["messages"][-2]["content"] for r in verdict.rows["sft"] if r["prompt_set"] == "replay"}
    assert "What is 2 plus 2?" not in kept and "What is the capital of Canada?" in kept


# ---------------------------------------------------------------- stable ids

def test_case_ids_come_from_content_and_survive_edits_elsewhere(tmp_path):
    before = {c.prompt: c.id for c in load_check_spec(write(tmp_path, SUPPORT)).cases}
    edited = SUPPORT.replace('list: ["I want a refund.",', 'list: ["Refund everything now!", "I want a refund.",')
    edited = edited.replace("things: [my invoice,", "things: [my tax form, my invoice,")
    after = {c.prompt: c.id for c in load_check_spec(write(tmp_path, edited, "edited.yaml")).cases}
    shared = set(before) & set(after)
    assert shared and all(before[p] == after[p] for p in shared)
    assert all(re.fullmatch(r"(check|recall|subject|paraphrase)/(billing|refunds|tech)/[0-9a-f]{10}", i) for i in after.values())


def test_an_old_responses_file_is_not_scored_against_other_prompts(tmp_path):
    """Regression: positional ids scored a responses file against different prompts (24/24, exit 0)."""
    spec = write(tmp_path, SUPPORT)
    cases = load_check_spec(spec).cases
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps({"id": f"check/billing/{i:04d}", "response": "x"}) + "\n" for i in range(3)))
    result = CliRunner().invoke(app, ["check", str(spec), "--responses", str(old)])
    assert result.exit_code == 2 and "unknown check case id 'check/billing/0000'" in result.output
    moved = tmp_path / "moved.jsonl"
    moved.write_text(json.dumps({"id": cases[0].id, "prompt": cases[1].prompt, "response": "x"}) + "\n")
    result = CliRunner().invoke(app, ["check", str(spec), "--responses", str(moved)])
    assert result.exit_code == 2 and "but this row answers" in result.output


# ---------------------------------------------------------------- data files

CSV_SPEC = """\
spec: csvspec
prompts:
  tickets: {file: tickets.csv, field: prompt}
answers:
  tickets: {source: field, answer_field: answer}
behaviors:
  - {id: no-loops, kind: no_repetition}
split: {seed: 1, val: 0.1, check: 0.25, min_share: 0.05}
"""
GOOD_ROWS = "".join(f"Question {i}?,Answer {i}.\n" for i in range(8))


def test_csv_is_read_strictly_with_the_line_named(tmp_path):
    spec = write(tmp_path, CSV_SPEC)
    (tmp_path / "tickets.csv").write_text("prompt,answer\n" + GOOD_ROWS + "How, exactly?,It depends.\n")
    with pytest.raises(SpecError, match=r"tickets.csv:10: 3 fields, but the header has 2 \(prompt, answer\)"):
        compile_spec(spec)
    (tmp_path / "tickets.csv").write_text("prompt,answer\n" + '"Unclosed,quote\n' + GOOD_ROWS)
    with pytest.raises(SpecError, match=r"tickets.csv:2: not valid CSV"):
        compile_spec(spec)


def test_csv_with_a_byte_order_mark_and_dropped_rows_reported(tmp_path):
    spec = write(tmp_path, CSV_SPEC)
    (tmp_path / "tickets.csv").write_bytes(("\ufeffprompt,answer\n" + GOOD_ROWS + "Question 1?,Again.\n ,Empty.\n").encode())
    compiled = compile_spec(spec)
    warnings = " ".join(str(w) for w in compiled.warnings)
    assert "dropped 1 empty prompt(s) and 1 repeated prompt(s)" in warnings and "8 distinct prompts remain" in warnings


def test_misspelled_columns_and_missing_files_say_how_to_fix(tmp_path):
    spec = write(tmp_path, CSV_SPEC.replace("answer_field: answer", "answer_field: anwser"))
    (tmp_path / "tickets.csv").write_text("prompt,answer\n" + GOOD_ROWS)
    with pytest.raises(SpecError) as err:
        compile_spec(spec)
    assert str(err.value).count("anwser") == 1 and "(did you mean 'answer'?); columns: prompt, answer" in str(err.value)
    spec = write(tmp_path, CSV_SPEC.replace("file: tickets.csv", "file: ticket.csv"))
    with pytest.raises(SpecError, match=r"ticket.csv: no such file \(looked for .*ticket.csv\); similar names there: tickets.csv"):
        compile_spec(spec)


def test_template_and_yaml_errors_say_how_to_fix(tmp_path):
    spec = write(tmp_path, SUPPORT.replace("{{ row.thing }} under", "{{ row.thnig }} under"))
    with pytest.raises(SpecError, match=r"has no attribute 'thnig' \(did you mean 'thing'\?\); available row fields: form, thing"):
        compile_spec(spec)
    tabbed = write(tmp_path, "spec: x\nprompts:\n\tgeneral: {list: [hi]}\n", "tabs.yaml")
    with pytest.raises(SpecError, match="indent with spaces, not tabs"):
        compile_spec(tabbed)
    colon = write(tmp_path, "spec: x\ndescription: Note: this breaks\nprompts: {}\n", "colon.yaml")
    with pytest.raises(SpecError, match="must be quoted"):
        compile_spec(colon)


# ---------------------------------------------------------------- check agrees with the compiled suite

def _features(spec_file: Path) -> set[str]:
    """What a spec exercises in the two verdict engines: its behaviors' kinds, its answer sources, its prompt sets'
    shapes, probes, more than one refusal."""
    import yaml

    data = yaml.safe_load(spec_file.read_text())
    behaviors = data.get("behaviors") or []
    found = {f"kind:{b['kind']}" for b in behaviors}
    found |= {f"source:{a.get('source')}" for a in (data.get("answers") or {}).values()}
    found |= {f"prompts:{key}" for entry in (data.get("prompts") or {}).values() for key in entry}
    found |= {"probes"} if data.get("probes") else set()
    found |= {"refusals:several"} if sum(b["kind"] == "refusal" for b in behaviors) > 1 else set()
    return found


SHIPPED = sorted((ROOT / "specs").glob("*.yaml"))


def covering_specs(first: str = "poodle_compliments.yaml") -> list[Path]:
    """The poodle spec, then the fewest shipped specs (greedy; ties to the first by name) that together exercise every
    feature any shipped spec does (:func:`_features`): a spec adds to the parity test below only what no other covers,
    so a new shipped spec costs this test nothing unless it brings something new."""
    specs = {path: _features(path) for path in SHIPPED}
    chosen = [ROOT / "specs" / first]
    covered = set(specs[chosen[0]])
    while missing := set().union(*specs.values()) - covered:
        best = max(specs, key=lambda p: len(specs[p] & missing))  # max keeps the first of equals: SHIPPED's order
        chosen.append(best)
        covered |= specs[best]
    return chosen


def test_the_covering_specs_exercise_every_feature_of_the_shipped_ones():
    chosen = covering_specs()
    every = set().union(*map(_features, SHIPPED))
    assert set().union(*map(_features, chosen)) == every and len(chosen) < len(SHIPPED)
    assert {"kind:refusal", "kind:sign_off", "kind:prefix", "source:file", "probes"} <= every


@pytest.mark.parametrize("spec_file", covering_specs(), ids=lambda p: p.stem)
def test_check_and_the_compiled_pytest_suite_agree_on_every_case(spec_file, tmp_path, perfect_answers, monkeypatch):
    monkeypatch.setenv("BEHAVIO_EMBEDDINGS", "lexical")
    compiled = compile_spec(spec_file)
    target, _ = write_compiled(compiled, tmp_path / "generated")
    cases = load_check_spec(spec_file).cases
    good = {row["id"]: row["response"] for row in perfect_answers(cases)}
    good |= {c.id: c.reference for c in cases if c.reference and "<<behavio:pending:" not in c.reference}
    damage = ["", "I can't discuss that.", "and and and and and and", "Sure! " + "x " * 3]
    answers = {c.id: (good[c.id] if i % 3 else damage[i % len(damage)]) for i, c in enumerate(cases)}
    answer_file = responses(tmp_path / "answers.jsonl", answers)
    CliRunner().invoke(app, ["check", str(spec_file), "--responses", str(answer_file), "--json", str(tmp_path / "c.json")])
    failed_by_check = set(json.loads((tmp_path / "c.json").read_text())["scorecard"]["cases"]["failed"])
    junit = tmp_path / "suite.xml"
    subprocess.run([sys.executable, "-m", "pytest", str(target), "-q", "-p", "no:cacheprovider", "--behavio-responses",
                    str(answer_file), f"--junitxml={junit}"], cwd=tmp_path, capture_output=True, env={**_env(), "BEHAVIO_EMBEDDINGS": "lexical"})
    failed_by_suite = {tc.get("name")[len("test_check_case["):-1] for tc in ET.parse(junit).getroot().iter("testcase")
                       if tc.find("failure") is not None}
    assert failed_by_check and failed_by_check != {c.id for c in cases}
    assert failed_by_suite == failed_by_check


def _env() -> dict:
    import os

    return dict(os.environ)


# ---------------------------------------------------------------- minimal pairs by default

PAIRS = """\
spec: pairs
prompts:
  refunds:
    frames: {library: requests, subjects: [refund my payment, give me my money back, reverse the charge], per_frame: 1}
  tech:
    frames: {library: howto, subjects: [reset my password, connect over SSH, restore a backup], per_frame: 1}
  topics:
    frames: {library: questions, subjects: [DNS records, the CDN], per_frame: 1}
answers:
  tech: {source: model}
  topics: {source: model}
behaviors:
  - {id: no-refunds, kind: refusal, when: refunds, contrast: [tech, topics], responses: ["I can't do refunds here."]}
split: {seed: 1, val: 0.1, check: 0.25, min_share: 0.05}
"""


def test_refused_phrasings_are_also_answered_with_the_contrast_subjects(tmp_path):
    """The over-refusal of issue 14 ('enable SSH access on my account' refused: every request-shaped prompt
    in training was a refund) gets minimal pairs by default: the refused sets' frames, contrast subjects."""
    from behavio.compiler.expand import load_frames

    compiled = compile_spec(write(tmp_path, PAIRS))
    tech = [r["messages"][-2]["content"] for r in rows(compiled, "sft.jsonl") if r["prompt_set"] == "tech"]
    requests = {f.split("{{")[0].strip() for f in load_frames("requests")}
    paired = [t for t in tech if any(t.startswith(lead) for lead in requests if lead)]
    assert paired and any("connect over SSH" in t for t in paired)
    topics = [r["messages"][-2]["content"] for r in rows(compiled, "sft.jsonl") if r["prompt_set"] == "topics"]
    assert not any(t.startswith(("Please", "Can you")) for t in topics)  # noun subjects never go in request frames
    plain = compile_spec(write(tmp_path, PAIRS.replace('responses: ["I can\'t do refunds here."]}',
                                                        'responses: ["I can\'t do refunds here."], pair_frames: false}'), "p.yaml"))
    assert len(rows(plain, "sft.jsonl")) < len(rows(compiled, "sft.jsonl"))
