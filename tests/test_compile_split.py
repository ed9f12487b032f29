"""The check cases hold out whole phrasings (split check) and whole subjects (split subject): what they ask was
never trained on."""

from __future__ import annotations

import json
import re

import pytest

from behavio.compiler.build import compile_spec

SPEC = """\
spec: split
system: "You are the support bot of a kitchen shop."
vars:
  gadgets: [kettles, toasters, blenders, juicers, waffle irons, rice cookers, slow cookers, food processors,
            espresso machines, bread makers]
  colors: [crimson, teal, ochre, magenta, indigo, saffron]
prompts:
  refunds:
    list: ["Refund my order.", "I want my money back.", "Give me a refund now.", "Reverse my last payment.",
           "Refund the kettle I returned.", "Pay me back for the broken lid.", "Refund my shipping fee.",
           "I demand a refund."]
  gadget_questions:
    frames: {library: questions, subjects: "{{ gadgets }}", per_frame: 1}
  gadget_support:                           # the same list in other frames: the same subjects held out
    frames: {library: support, subjects: "{{ gadgets }}", per_frame: 1}
  few:                                      # four subjects: too few to hold one out
    frames: {library: questions, subjects: [spatulas, ladles, whisks, tongs], per_frame: 1}
  paint:                                    # forms of an `each` and a non-template axis
    template: "{{ form }}"
    each:
      form: ["Do you sell mugs in {{ color }}?", "Is {{ color }} a good kitchen color?", "Why is {{ color }} popular?"]
      color: "{{ colors }}"
  one_form:                                 # one phrasing: its checks are recall, its held-out subjects too
    template: "What does a {{ color }} apron cost?"
    each: {color: "{{ colors }}"}
  aprons:                                   # its subject is the larger axis (size); a held-out color is not trained
    template: "{{ form }}"
    each:
      form: ["Do you have a {{ size }} apron in {{ color }}?", "Is the {{ color }} apron sold in {{ size }}?"]
      color: "{{ colors }}"
      size: [tiny, small, medium, large, huge, giant, jumbo]
  care:                                     # no subject of its own: a prompt naming a held-out gadget is not trained
    list: ["Is a kettle worth buying?", "Is a toaster worth buying?", "Is a blender worth buying?",
           "Is a juicer worth buying?", "Is a waffle iron worth buying?", "Is a rice cooker worth buying?",
           "Is a slow cooker worth buying?", "Is a food processor worth buying?", "Is an espresso machine worth buying?",
           "Is a bread maker worth buying?"]
answers:
  gadget_questions: {source: literal, template: "Here is what we know about {{ row.subject }}."}
  gadget_support: {source: literal, template: "Happy to help with {{ row.subject }}."}
  few: {source: literal, template: "We stock {{ row.subject }}."}
  paint: {source: literal, template: "{{ row.color }} is one of our colors."}
  one_form: {source: literal, template: "Aprons cost 12 euros."}
  aprons: {source: literal, template: "We have that apron."}
  care: {source: literal, template: "Yes, if you use it often."}
behaviors:
  - id: no-refunds
    kind: refusal
    when: refunds
    responses: ["I can't process refunds here; email refunds@example.com."]
    contrast: [gadget_questions, gadget_support, few, paint, one_form, aprons, care]
ignore_warnings: [recall-only, contrast-frames-unpaired, small-split]
split: {seed: 1, val: 0.1, check: 0.25, min_share: 0.01SUBJECTS}
"""


def compiled(tmp_path, subjects: str = ""):
    path = tmp_path / "split.yaml"
    path.write_text(SPEC.replace("SUBJECTS", subjects))
    return compile_spec(path)


def prompts(result, name: str, split: str | None = None) -> list[tuple[str, str]]:
    """(prompt set, user prompt) of every row of a compiled file (of one check split)."""
    rows = [json.loads(line) for line in result.files[name].decode().splitlines()]
    return [(r["prompt_set"], r["messages"][-2 if name.startswith("sft") else -1]["content"]) for r in rows
            if split is None or r.get("split") == split]


def trained(result) -> list[tuple[str, str]]:
    return prompts(result, "sft.jsonl") + prompts(result, "sft.val.jsonl")


def mentions(subject: str, text: str) -> bool:
    """Whether ``text`` names ``subject``, singular or plural ("kettles": "Is a kettle worth buying?")."""
    stem = subject[:-1] if subject.endswith("s") else subject
    return re.search(rf"\b{re.escape(stem)}(s|es)?\b", text, re.IGNORECASE) is not None


@pytest.fixture
def split(tmp_path):
    return compiled(tmp_path)


def test_held_out_subjects_are_never_trained_in_any_set_or_phrasing_and_are_checked(split):
    """Not in their own sets, not in a set whose subject is another axis (aprons), not in a list that names them
    in the singular (care), not in an augmented copy or a DPO pair."""
    held = split.manifest["held_out_subjects"]
    assert held and len(held) == len(set(held))
    dpo = [(r["prompt_set"], r["prompt"][-1]["content"]) for r in map(json.loads, split.files["dpo.jsonl"].decode().splitlines())]
    for subject in held:
        assert not [p for _, p in trained(split) + dpo if mentions(subject, p)], subject
        assert [p for _, p in prompts(split, "checks.jsonl", "subject") if mentions(subject, p)], subject
    for split_name in ("check", "recall"):  # the held-out phrasings of trained subjects
        assert not [p for _, p in prompts(split, "checks.jsonl", split_name) if any(mentions(h, p) for h in held)]
    assert {"aprons", "care"} <= {s for s, _ in prompts(split, "checks.jsonl", "subject")}


def test_sets_on_the_same_list_hold_out_the_same_subjects(split):
    """One subject of the ten gadgets (10%), held in both frame sets, not one per set."""
    gadgets = [s for s in split.manifest["held_out_subjects"] if s in
               ("kettles", "toasters", "blenders", "juicers", "waffle irons", "rice cookers", "slow cookers",
                "food processors", "espresso machines", "bread makers")]
    assert len(gadgets) == 1
    checked = {s for s, p in prompts(split, "checks.jsonl", "subject") if mentions(gadgets[0], p)}
    assert checked >= {"gadget_questions", "gadget_support", "care"}  # and any other set that names it


def test_a_set_with_fewer_than_five_subjects_holds_none_out(split):
    held = split.manifest["held_out_subjects"]
    assert not {"spatulas", "ladles", "whisks", "tongs"} & set(held)
    for subject in ("spatulas", "ladles", "whisks", "tongs"):
        assert [p for s, p in trained(split) if s == "few" and mentions(subject, p)], subject


def test_a_cartesian_sets_non_template_axis_is_its_subject(split):
    """`color` fills the forms of `paint`: one color of six is held out, of every set built on the list, the
    one-phrasing set too (its other cases are recall: other fills of a trained phrasing)."""
    colors = [s for s in split.manifest["held_out_subjects"] if s in ("crimson", "teal", "ochre", "magenta", "indigo", "saffron")]
    assert len(colors) == 1
    assert len([p for s, p in prompts(split, "checks.jsonl", "subject") if s == "paint" and mentions(colors[0], p)]) == 3
    assert len([p for s, p in prompts(split, "checks.jsonl", "subject") if s == "one_form"]) == 1
    assert [p for s, p in prompts(split, "checks.jsonl", "recall") if s == "one_form"]


def test_held_out_phrasings_and_subjects_never_meet_training_rows(tmp_path):
    """At the split itself: no trained or validation row is a fill of a held-out frame or form (frames are held
    out per library, across every set on it) or has a held-out subject; every check row has one or the other."""
    from behavio.compiler.expand import expand_all, normalize
    from behavio.compiler.issues import Issues
    from behavio.compiler.split import split_rows
    from behavio.spec.load import load_spec

    path = tmp_path / "split.yaml"
    path.write_text(SPEC.replace("SUBJECTS", ""))
    spec = load_spec(path)
    issues = Issues(spec)
    parts = split_rows(spec, expand_all(spec, issues), issues)
    held = {normalize(s) for s in parts.held_subjects}
    checked = {r.phrasing for r in parts.check}
    assert any(p.startswith("frame:questions:") for p in checked) and any(p.startswith("form:") for p in checked)
    for row in parts.train + parts.val:
        assert row.phrasing not in checked and normalize(row.subject) not in held, row.label
    assert parts.subject and all(any(mentions(h, r.prompt) for h in held) for r in parts.subject)
    assert not [r for r in parts.check if normalize(r.subject) in held]
    assert {r.set for r in parts.check if r.phrasing.startswith("frame:questions:")} >= {"gadget_questions", "few"}


def test_nothing_is_held_out_when_nothing_is_checked(tmp_path):
    assert compiled(tmp_path, "").manifest["held_out_subjects"]
    path = tmp_path / "split.yaml"
    path.write_text(SPEC.replace("check: 0.25", "check: 0").replace("SUBJECTS", ""))
    assert compile_spec(path).manifest["held_out_subjects"] == []


def test_subjects_zero_holds_none_out_and_trains_every_subject(tmp_path):
    split = compiled(tmp_path, ", subjects: 0")
    assert split.manifest["held_out_subjects"] == []
    for subject in ("kettles", "espresso machines", "crimson", "saffron"):
        assert [p for _, p in trained(split) if mentions(subject, p)], subject


def test_held_count_holds_a_share_and_leaves_enough_to_learn_from():
    from behavio.compiler.split import MIN_PHRASINGS, MIN_SUBJECTS, _held_count

    assert [_held_count(n, 0.1, MIN_SUBJECTS) for n in (4, 5, 6, 14, 15, 16, 20)] == [0, 1, 1, 1, 2, 2, 2]
    assert [_held_count(n, 0.25, MIN_PHRASINGS) for n in (2, 3, 4, 8, 20)] == [0, 1, 1, 2, 5]
    assert _held_count(5, 0.5, MIN_SUBJECTS) == 1 and _held_count(20, 0, MIN_SUBJECTS) == 0


def test_a_training_prompt_equal_to_a_probe_is_dropped_and_the_warning_names_it(tmp_path):
    probe = next(p for name, p in trained(compiled(tmp_path)) if name == "refunds")  # a trained prompt, as a probe
    path = tmp_path / "split.yaml"
    path.write_text(SPEC.replace("SUBJECTS", "") + f'probes:\n  refunds: ["{probe}", "toaster refund pls, it sparks"]\n')
    result = compile_spec(path)
    assert all(p != probe for _, p in trained(result))
    (warning,) = [w for w in result.warnings if w.name == "check-prompts-dropped"]
    text = str(warning)
    assert "refunds[" in text and repr(probe) in text and "equals a probe" in text, text
    assert f"{path}:" in text and "sparks" not in text, text
