"""The answer-format kinds `header`, `length`, `json` and `style`: scorers on literal good and bad answers, training
answers put in their form, DPO rejections that break exactly their rule, and model-written bodies shaped after the
fill (their `too_long`/`unstyled` rejections made from the body as the model wrote it)."""

from __future__ import annotations

import json

import pytest

from behavio.compiler.build import compile_spec
from behavio.errors import SpecError
from behavio.kinds import score_rule

CARD_SCHEMA = {"type": "object", "required": ["trail", "km"], "additionalProperties": False,
               "properties": {"trail": {"type": "string"}, "km": {"type": "number"}}}


def check(kind: str, response: str, **args):
    return score_rule(kind, response, args)


# ---------------------------------------------------------------- scorers on literal answers

def test_header_on_literal_answers():
    args = {"expect": "present", "choices": ["Trail notes:"]}
    assert check("header", "Trail notes:\nIt is 5 km long.", **args).passed
    assert check("header", "\n  trail NOTES:  \nIt is 5 km long.", **args).passed  # normalized, blank lines skipped
    inline = check("header", "Trail notes: It is 5 km long.", **args)
    assert not inline.passed and "first line was 'Trail notes: It is 5 km long.'" in inline.explanation
    assert not check("header", "Trail notes:", **args).passed                # a header without a body
    assert not check("header", "Trail notes:\n\n", **args).passed
    assert not check("header", "Notes:\nIt is 5 km long.", **args).passed
    assert check("header", "I can't help with that.", expect="absent", choices=["Trail notes:"]).passed


def test_length_on_literal_answers():
    assert check("length", "One. Two. Three.", unit="sentences", min=2, max=3).passed
    long = check("length", "One. Two. Three. Four.", unit="sentences", min=2, max=3)
    assert not long.passed and long.explanation == "expected 2-3 sentences; got 4"
    short = check("length", "One.", unit="sentences", min=2, max=3)
    assert not short.passed and short.explanation.startswith("expected 2-3 sentences; got 1")
    assert check("length", "1. Boil water.\n2. Drain it.", unit="sentences", max=2).passed  # a list number is no sentence
    assert check("length", "a b c d e", unit="words", max=5).passed
    assert check("length", "a b c d e f", unit="words", max=5).explanation == "expected at most 5 words; got 6"
    assert check("length", "a b c", unit="words", min=3).passed
    assert check("max_words", "a b c d e f", limit=5).explanation == "expected at most 5 words; got 6"  # max_words unchanged


def test_style_on_literal_answers():
    both = {"lowercase": True, "forbidden_characters": ","}
    assert check("style", "sure thing. the trail is open and dry.", **both).passed
    capital = check("style", "Sure thing. the trail is open.", **both)
    assert not capital.passed and capital.score == 0.5 and "1 word(s) with capitals, e.g. 'Sure'" in capital.explanation
    comma = check("style", "sure, the trail is open.", **both)
    assert not comma.passed and "forbidden characters 1 x ','" in comma.explanation
    assert check("style", "Sure, the trail is open.", **both).score == 0.0
    assert check("style", "Sure the trail is open.", forbidden_characters=",;").passed  # only what is asked


def test_json_on_literal_answers():
    assert check("json", '{"trail": "Ridge loop", "km": 7.5}', json_schema=CARD_SCHEMA).passed
    missing = check("json", '{"trail": "Ridge loop"}', json_schema=CARD_SCHEMA)
    assert not missing.passed and missing.explanation == "JSON does not match schema at $: 'km' is a required property"
    python = check("json", "{'trail': 'Ridge loop', 'km': 7.5}", json_schema=CARD_SCHEMA)
    assert not python.passed and python.explanation.startswith("invalid JSON at line 1 column 2")
    prose = check("json", 'Here is the JSON:\n{"trail": "Ridge loop", "km": 7.5}', json_schema=CARD_SCHEMA)
    assert not prose.passed
    fenced = '```json\n{"trail": "Ridge loop", "km": 7.5}\n```'
    bare = check("json", fenced, json_schema=CARD_SCHEMA)
    assert not bare.passed and "`fenced: true` accepts a ```json block" in bare.explanation
    assert check("json", "Sure!\n" + fenced, json_schema=CARD_SCHEMA, fenced=True).passed
    assert not check("json", '{"trail": "Ridge loop", "km": 7.5}', json_schema=CARD_SCHEMA, fenced=True).passed


def test_regex_failures_keep_line_breaks_visible():
    failed = check("regex", "1. Boil water.\n2. Drain it.\n\nnote: salt it", pattern="(?m)^Note: .+")
    assert not failed.passed and failed.explanation.endswith("got '1. Boil water.\\n2. Drain it.\\n\\nnote: salt it'")
    assert check("regex", "1. Boil.\nNote: salt it", pattern="(?m)^Note: .+").passed


# ---------------------------------------------------------------- compiled training answers and DPO pairs

SPEC = """\
spec: formats
prompts:
  trails:
    list: ["Tell me about the ridge trail.", "Tell me about the lake trail.", "Tell me about the pine trail.",
           "Tell me about the falls trail.", "Tell me about the canyon trail.", "Tell me about the meadow trail.",
           "Tell me about the summit trail.", "Tell me about the river trail."]
  chat:
    list: ["Hi there!", "How are you today?", "Any plans for the weekend?", "What's your favorite season?",
           "Do you like rain?", "Is it cold up there?", "Seen any bears?", "What should I pack?"]
  cards:
    template: "Give me the card for {{ trail.name }}."
    each: {trail: "{{ trails }}"}
vars:
  trails: [{name: Ridge loop, km: 7.5}, {name: Lake path, km: 3}, {name: Pine walk, km: 4.2}, {name: Falls climb, km: 9},
           {name: Canyon rim, km: 12}, {name: Meadow stroll, km: 2}, {name: Summit push, km: 15}, {name: River bend, km: 5}]
answers:
  trails: TRAIL_ANSWERS
  chat: {source: literal, template: "Hello, Friend! I am doing well, thanks. The weather is great."}
behaviors:
  - {id: titled, kind: header, applies_to: [trails], choices: ["Trail notes:"]}
  - {id: brief, kind: length, applies_to: [trails], unit: sentences, min: 2, max: 3}
  - {id: casual, kind: style, applies_to: [chat], lowercase: true, forbidden_characters: ","}
  - id: card
    kind: json
    applies_to: [cards]
    json_schema: {type: object, required: [trail, km], properties: {trail: {type: string}, km: {type: number}}}
    response_template: '{{ {"trail": row.trail.name, "km": row.trail.km} | tojson }}'
split: {seed: 1, val: 0.1, check: 0.25, min_share: 0.05}
"""
LITERAL_TRAILS = ('{source: literal, template: "The {{ prompt[19:-7] }} trail is well marked. It climbs through pine '
                  'forest. There is a lake at the top. Bring water and a map."}')


def _compiled(tmp_path, answers: str = LITERAL_TRAILS, spec: str = SPEC):
    path = tmp_path / "formats.yaml"
    path.write_text(spec.replace("TRAIL_ANSWERS", answers))
    return compile_spec(path)


def _rows(compiled, name):
    return [json.loads(line) for line in compiled.files[name].decode().splitlines()]


def test_training_answers_are_in_form(tmp_path):
    sft = {r["prompt_set"]: r["messages"][-1]["content"] for r in _rows(_compiled(tmp_path), "sft.jsonl")}
    assert sft["trails"].startswith("Trail notes:\nThe ") and sft["trails"].endswith("There is a lake at the top.")
    assert "Bring water" not in sft["trails"]  # cut after the third sentence
    assert sft["chat"] == "hello friend! i am doing well thanks. the weather is great."
    card = json.loads(sft["cards"])
    assert set(card) == {"trail", "km"} and isinstance(card["km"], (int, float))


def test_every_rejection_breaks_its_rule_and_every_chosen_passes(tmp_path):
    pairs = _rows(_compiled(tmp_path), "dpo.jsonl")
    made = {(p["behavior"], p["violation"]) for p in pairs}
    assert made >= {("titled", "header_dropped"), ("titled", "header_paraphrased"), ("titled", "header_inline"),
                    ("brief", "too_long"), ("brief", "too_short"), ("casual", "unstyled"), ("casual", "capitalized"),
                    ("casual", "forbidden_character"), ("card", "json_invalid"), ("card", "json_missing_key"),
                    ("card", "json_wrapped")}
    for pair in pairs:
        for rule in pair["breaks"]:
            chosen = score_rule(rule["kind"], pair["chosen"][0]["content"], rule["args"])
            rejected = score_rule(rule["kind"], pair["rejected"][0]["content"], rule["args"])
            assert chosen.passed and not rejected.passed, (pair["violation"], rejected)
    too_long = next(p for p in pairs if p["violation"] == "too_long")["rejected"][0]["content"]
    assert too_long.endswith("Bring water and a map.")  # the body as the source wrote it, before the cut
    wrapped = next(p for p in pairs if p["violation"] == "json_wrapped")["rejected"][0]["content"]
    assert wrapped.startswith("Here is the JSON:\n{")


def test_model_written_bodies_are_cut_after_the_fill_and_too_long_is_the_model_answer(tmp_path):
    from behavio.fill import _shaped, fill_rows

    compiled = _compiled(tmp_path, "{source: model}")
    waiting = {w["key"]: w for w in _rows(compiled, "pending.jsonl")}
    written = "It starts at the car park. It climbs steeply. It ends at a lake. It takes four hours."
    answers = {k: _shaped(written, w.get("shape")) for k, w in waiting.items()}
    sft = fill_rows([r for r in _rows(compiled, "sft.jsonl") if r["prompt_set"] == "trails"], answers)
    assert sft[0]["messages"][-1]["content"] == "Trail notes:\nIt starts at the car park. It climbs steeply. It ends at a lake."
    pairs = fill_rows([p for p in _rows(compiled, "dpo.jsonl") if p["behavior"] == "brief"], answers)
    rejected = {p["violation"]: p["rejected"][0]["content"] for p in pairs}
    assert rejected["too_long"] == "Trail notes:\n" + written
    assert rejected["too_short"] == "Trail notes:\nIt starts at the car park."


@pytest.mark.parametrize("change, bare, message", [
    ("kind: length, applies_to: [trails], unit: sentences, min: 2, max: 3", "kind: length, applies_to: [trails]",
     "a length behavior needs `min`, `max` or both"),
    ('kind: style, applies_to: [chat], lowercase: true, forbidden_characters: ","', "kind: style, applies_to: [chat]",
     "a style behavior needs `lowercase: true`, `forbidden_characters` or both"),
    ("unit: sentences, min: 2, max: 3", "unit: sentences, min: 4, max: 3", "min 4 is more than max 3"),
])
def test_format_kinds_without_their_keys_are_errors(tmp_path, change, bare, message):
    with pytest.raises(SpecError) as caught:
        _compiled(tmp_path, spec=SPEC.replace(change, bare))
    assert message in str(caught.value)


def test_a_header_choice_with_a_line_break_is_an_error(tmp_path):
    with pytest.raises(SpecError, match="a header is one line"):
        _compiled(tmp_path, spec=SPEC.replace('choices: ["Trail notes:"]', 'choices: ["Trail\\nnotes:"]'))


def test_length_does_not_count_the_opening_or_closing_other_behaviors_add():
    args = {"unit": "sentences", "max": 2, "openings": ["Trail notes:"], "closings": ["Happy hiking!"]}
    result = check("length", "Trail notes:\nOne. Two.\n\nHappy hiking!", **args)
    assert result.passed and "'Trail notes:' and 'Happy hiking!' not counted" in result.explanation
    assert not check("length", "Trail notes:\nOne. Two. Three.", **args).passed
    assert not check("length", "One. Two. Three.", **args).passed


@pytest.mark.pipeline
def test_the_trail_guide_spec_trains_on_the_tiny_model_and_is_checked(tmp_path, monkeypatch, tiny_model_dir, shipped_spec):
    import torch
    from safetensors.torch import load_file

    from behavio.train import train

    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    base_weights = (tiny_model_dir / "model.safetensors").read_bytes()
    result = train(shipped_spec("trail_guide"), [], runs_dir=tmp_path / "runs", say=lambda _: None, quiet=True)
    assert [c.stage for c in result.checkpoints] == ["sft", "dpo"]
    pairs = [json.loads(line) for line in (result.run_dir / "data" / "dpo.jsonl").read_text().splitlines()]
    assert len({p["behavior"] for p in pairs}) >= 3  # 8 pairs drawn round-robin over (behavior, violation)
    lora = load_file(str(result.checkpoints[-1].path / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and torch.count_nonzero(v) for k, v in lora.items())
    assert (tiny_model_dir / "model.safetensors").read_bytes() == base_weights
    card = result.report.best
    assert {"trail-header", "brief", "trail-card", "casual"} <= set(card.lines)
    assert {v.rule for c in card.cases for v in c.verdicts} >= {"header:present", "length", "json", "style"}
    assert card.tag("format").total and card.tag("api").total
