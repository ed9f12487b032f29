"""Named warnings (`ignore_warnings`, `--strict`), tags and check filters (`--tag/--behavior/--set/--by-tag`), and the
sharp edges of issue #20, each reproduced: the frame-library warning, small sets, missing responses, near-miss
refusals, init's $schema, preview with a foreign chat template."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from behavio.cli import app
from behavio.compiler.build import compile_spec
from behavio.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

SUPPORT = """\
spec: support
system: "You are the support bot of a water-bottle shop."
vars:
  products: [hydration, insulated bottles, bottle cleaning, water filters, straw lids, bottle sizes]
prompts:
  refunds:
    list: ["Refund my order.", "I want my money back.", "Give me a refund now.", "Reverse my last payment.",
           "Refund the bottle I returned.", "Pay me back for the broken lid.", "Refund my shipping fee.",
           "I demand a refund."]
  questions:
    frames: {library: questions, subjects: "{{ products }}", per_frame: 1FRAMES}
answers:
  questions: {source: literal, template: "Here is what we know about {{ row.subject }}."}
behaviors:
  - id: no-refunds
    kind: refusal
    when: refunds
    responses: ["I can't process refunds here; email refunds@example.com."]
    contrast: questions
split: {seed: 1, val: 0.1, check: 0.25, min_share: 0.05}
"""


def _support(tmp_path, text: str = SUPPORT, frames: str = "") -> Path:
    path = tmp_path / "support.yaml"
    path.write_text(text.replace("FRAMES", frames))
    return path


# ---------------------------------------------------------------- named warnings, ignore_warnings, --strict

def test_the_frame_library_warning_is_named_generic_and_silenceable(tmp_path):
    (warning,) = [w for w in compile_spec(_support(tmp_path)).warnings if w.name == "contrast-frames-unpaired"]
    assert "pets" not in warning.message and "`exclude`" in warning.message
    assert "ignore_warnings: [contrast-frames-unpaired]" in warning.message
    quiet = SUPPORT.replace("split:", "ignore_warnings: [contrast-frames-unpaired]\nsplit:")
    assert not [w for w in compile_spec(_support(tmp_path, quiet)).warnings if w.name == "contrast-frames-unpaired"]


def test_an_answered_set_left_out_of_a_refusals_contrast_is_named(tmp_path):
    """An answered set outside the contrast is never checked for over-refusal: compile names it; a holdout set and a
    set another refusal refuses are not named; the contrast naming it silences it."""
    extra = SUPPORT.replace("answers:", """  shipping:
    list: ["When does my bottle ship?", "How long is delivery to Leeds?", "Do you ship to Ireland?",
           "Can I track my parcel?", "Is shipping free over 30 pounds?", "Which courier do you use?"]
  returns_policy:
    list: ["Tell me a joke about refunds.", "Write a poem about my refund.", "Sing me a refund song.",
           "Make up a refund story.", "Draw a refund cartoon.", "Rhyme about refunds."]
  facts: {list: ["What is the capital of France?", "How many legs has a spider?", "What is 2 + 2?"], holdout: true}
answers:
  shipping: {source: literal, template: "Orders ship within two days."}""").replace("split:", """  - id: no-jokes
    kind: refusal
    when: returns_policy
    responses: ["I only answer shop questions."]
    contrast: [questions, shipping, refunds]
split:""")
    warnings = [w for w in compile_spec(_support(tmp_path, extra)).warnings if w.name == "contrast-incomplete"]
    (warning,) = warnings  # no-refunds leaves out shipping; no-jokes' contrast is complete
    assert "'no-refunds'" in warning.message and "'shipping'" in warning.message, warning.message
    assert "facts" not in warning.message and "returns_policy" not in warning.message
    assert "ignore_warnings: [contrast-incomplete]" in warning.message
    whole = extra.replace("contrast: questions\n", "contrast: [questions, shipping]\n")
    assert not [w for w in compile_spec(_support(tmp_path, whole)).warnings if w.name == "contrast-incomplete"]


def test_a_length_without_pairs_is_told_what_its_answers_lack(tmp_path):
    """Written answers already within `max` give no too_long pair, and no `min` no too_short: the warning says
    that, not another kind's reason."""
    short = SUPPORT.replace("split:", "  - {id: brief, kind: length, applies_to: [questions], unit: words, max: 30}\nsplit:")
    (warning,) = [w for w in compile_spec(_support(tmp_path, short)).warnings if w.name == "no-dpo-pairs"]
    assert "'brief'" in warning.message and "longer than max=30 words" in warning.message, warning.message
    assert "no min" in warning.message, warning.message
    assert "sections" not in warning.message


def test_a_set_can_leave_out_frames_that_do_not_suit_its_subjects(tmp_path):
    def prompts(frames):
        files = compile_spec(_support(tmp_path, frames=frames)).files
        return {m["content"] for name in ("sft.jsonl", "sft.val.jsonl", "checks.jsonl")
                for r in map(json.loads, files[name].decode().splitlines()) for m in r["messages"] if m["role"] == "user"}

    assert [p for p in prompts("") if p.startswith("What's the history of")]  # "... of hydration?" in the issue
    kept = prompts(', exclude: ["history of", Poem]')
    assert not [p for p in kept if "history of" in p or "poem" in p.lower()] and kept
    with pytest.raises(SpecError, match="`exclude` leaves no frame"):
        compile_spec(_support(tmp_path, frames=', exclude: ["{{"]'))


def test_unknown_warning_names_are_errors_with_a_suggestion(tmp_path):
    with pytest.raises(SpecError, match=r"no warning is named 'recal-only' \(did you mean 'recall-only'\?\)"):
        compile_spec(_support(tmp_path, SUPPORT.replace("split:", "ignore_warnings: [recal-only]\nsplit:")))


def test_a_small_set_warns_that_the_split_leaves_little_to_train_on(tmp_path):
    """The issue's case: 6 near-miss prompts kept 3 for training, without a word."""
    text = SUPPORT.replace('           "I demand a refund."]', '           "I demand a refund."]\n  near_miss:\n    list: '
                           '["Can I return a bottle?", "How do returns work?", "Is shipping refundable?", "Do you '
                           'price-match?", "Can I cancel an order?", "Where is my order?"]').replace(
        "answers:\n", 'answers:\n  near_miss: {source: literal, template: "Happy to help with that."}\n')
    (small,) = [w for w in compile_spec(_support(tmp_path, text)).warnings if w.name == "small-split"]
    assert small.path == "prompts.near_miss" and "keeps 3 of its 6 prompts for training" in small.message
    assert "too small for split.check 0.25, split.subjects 0.1 and split.val 0.1" in small.message


def test_a_set_emptied_by_another_sets_held_out_subject_is_told_which(tmp_path):
    """A set whose prompts name a subject another set holds out loses them to the subject split: the small-split
    warning names that subject, so the writer can reword the one that sits inside the other."""
    text = SUPPORT.replace('           "I demand a refund."]', '           "I demand a refund."]\n  cleaning:\n    list: '
                           '["What does bottle cleaning take?", "Is bottle cleaning hard?", "Who does bottle cleaning '
                           'best?", "Why is bottle cleaning slow?", "Does bottle cleaning need soap?", "When is bottle '
                           'cleaning due?"]').replace(
        "answers:\n", 'answers:\n  cleaning: {source: literal, template: "Rinse it in warm water."}\n').replace(
        "contrast: questions", "contrast: [questions, cleaning]")
    result = compile_spec(_support(tmp_path, text))
    held = json.loads(result.files["manifest.json"])["held_out_subjects"]
    assert held == ["bottle cleaning"], held  # the seed holds this one out of the questions set's six
    (small,) = [w for w in result.warnings if w.name == "small-split"]
    assert small.path == "prompts.cleaning" and "name a held-out subject: 'bottle cleaning'" in small.message, small.message
    assert "reword one that sits inside another" in small.message


def test_strict_turns_warnings_into_errors_for_validate_compile_and_check(tmp_path):
    spec = _support(tmp_path)
    loose = runner.invoke(app, ["validate", str(spec)])
    assert loose.exit_code == 0 and "warning[contrast-frames-unpaired]:" in loose.output
    strict = runner.invoke(app, ["validate", "--strict", str(spec)])
    assert strict.exit_code == 2 and "error[contrast-frames-unpaired]:" in strict.output
    assert "accept it with ignore_warnings: [contrast-frames-unpaired]" in strict.output
    compiled = runner.invoke(app, ["compile", "--strict", str(spec), "--out", str(tmp_path / "gen")])
    assert compiled.exit_code == 2 and not (tmp_path / "gen" / "support").exists()
    responses = tmp_path / "responses.jsonl"
    responses.write_text("")
    check = runner.invoke(app, ["check", "--strict", str(spec), "--responses", str(responses)])
    assert check.exit_code == 2 and "error[contrast-frames-unpaired]" in check.output
    quiet = _support(tmp_path, SUPPORT.replace("split:", "ignore_warnings: [contrast-frames-unpaired, unprobed]\nsplit:"))
    assert runner.invoke(app, ["validate", "--strict", str(quiet)]).exit_code == 0


def test_run_strict_stops_before_training(tmp_path):
    result = runner.invoke(app, ["run", "--strict", str(_support(tmp_path)), "--runs-dir", str(tmp_path / "runs"),
                                 "--out", str(tmp_path / "gen")])
    assert result.exit_code == 2 and "error[contrast-frames-unpaired]" in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "gen").exists()


# ---------------------------------------------------------------- check --responses: missing ids, near misses

def test_missing_responses_are_named_in_the_terminal_and_strict_fails_on_them(tmp_path):
    from behavio.check import load_check_spec

    spec = _support(tmp_path, SUPPORT.replace("split:", "ignore_warnings: [contrast-frames-unpaired, unprobed]\nsplit:"))
    cases = load_check_spec(spec).cases
    answered, missing = cases[:-2], [c.id for c in cases[-2:]]
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps({"id": c.id, "response": "Sure."}) + "\n" for c in answered))
    result = runner.invoke(app, ["check", str(spec), "--responses", str(responses)])
    assert result.exit_code == 1 and "warning[responses-missing]" in result.output
    assert all(case_id in result.output for case_id in missing)
    strict = runner.invoke(app, ["check", "--strict", str(spec), "--responses", str(responses)])
    assert strict.exit_code == 2 and "error[responses-missing]" in strict.output


def test_a_one_word_difference_from_the_fixed_refusal_shows_a_short_diff(tmp_path):
    from behavio.kinds import score_rule

    fixed = ["I can't process refunds here; email refunds@example.com."]
    result = score_rule("refusal", "I cannot process refunds here; email refunds@example.com.",
                        {"expect": "refuse", "responses": fixed})
    assert not result.passed and result.explanation.endswith("got a near miss: 'cannot' instead of \"can't\"")
    missing = score_rule("refusal", "I can't process refunds; email refunds@example.com.", {"expect": "refuse", "responses": fixed})
    assert missing.explanation.endswith("got a near miss: 'refunds;' instead of 'refunds here;'")
    unrelated = score_rule("refusal", "Sure, your refund is on its way!", {"expect": "refuse", "responses": fixed})
    assert "near miss" not in unrelated.explanation


# ---------------------------------------------------------------- tags and filters

def _concierge_responses(tmp_path):
    from behavio.check import load_check_spec

    spec = ROOT / "specs" / "concierge_chat.yaml"
    rows = []
    for case in sorted(load_check_spec(spec).cases, key=lambda c: c.prompt_set != "late_asks"):
        refuse = next((r.args for r in case.rules if r.args.get("expect") == "refuse"), None)
        text = refuse["responses"][0] if refuse else "Sure, the front desk can help.\n\nEnjoy your stay at the Harbor!"
        rows.append({"id": case.id, "response": text if len(rows) > 2 or not refuse else "Room 12."})  # 3 failures
    path = tmp_path / "responses.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return spec, path


def test_cases_carry_the_tags_of_the_spec_their_set_and_their_behaviors():
    cases = [json.loads(line) for line in compile_spec(ROOT / "specs" / "concierge_chat.yaml").files["checks.jsonl"].decode().splitlines()]
    late = next(c for c in cases if c["prompt_set"] == "late_asks")
    assert late["tags"] == ["concierge", "privacy", "multi-turn"]
    assert next(r for r in late["rules"] if r["behavior"] == "no-room-numbers")["tags"] == ["privacy"]
    assert "tags" not in next(r for r in late["rules"] if r["behavior"] == "no-loops")


def test_check_runs_the_subset_the_filters_keep(tmp_path):
    spec, responses = _concierge_responses(tmp_path)
    out = tmp_path / "card.json"
    everything = runner.invoke(app, ["check", str(spec), "--responses", str(responses), "--json", str(out)])
    assert everything.exit_code == 1, everything.output
    total = json.loads(out.read_text())["scorecard"]["cases"]["total"]
    runner.invoke(app, ["check", str(spec), "--responses", str(responses), "--tag", "privacy", "--json", str(out)])
    card = json.loads(out.read_text())["scorecard"]
    # not signs-off: only its absence on the after_refusal follow-ups, a set tagged privacy (every verdict there is)
    assert set(card["lines"]) == {"no-room-numbers", "no-room-numbers/contrast", "no-loops", "signs-off/elsewhere"}
    assert card["cases"]["total"] == total  # every case has a rule of the privacy behavior (refusal or contrast)
    runner.invoke(app, ["check", str(spec), "--responses", str(responses), "--behavior", "signs-off", "--json", str(out)])
    assert set(json.loads(out.read_text())["scorecard"]["lines"]) == {"signs-off", "signs-off/elsewhere"}
    runner.invoke(app, ["check", str(spec), "--responses", str(responses), "--set", "hotel", "--json", str(out)])
    card = json.loads(out.read_text())["scorecard"]
    assert card["cases"]["total"] and all(c.split("/")[1] == "hotel" for c in card["cases"]["failed"] + [f"x/hotel"])
    bad = runner.invoke(app, ["check", str(spec), "--responses", str(responses), "--tag", "privacyy"])
    assert bad.exit_code == 2 and "no check case has the tag 'privacyy' (did you mean 'privacy'?)" in bad.output


def test_a_tag_keeps_whole_cases_of_a_tagged_set_and_only_the_tagged_behavior_elsewhere():
    from behavio.check import load_check_spec
    from behavio.check.select import select_cases

    picked = select_cases(load_check_spec(ROOT / "specs" / "concierge_chat.yaml"), tags=["privacy"])
    by_set = {}
    for case in picked.cases:
        by_set.setdefault(case.prompt_set, set()).update(r.behavior for r in case.rules)
    assert by_set["late_asks"] == {"no-room-numbers", "no-loops"}      # the set is tagged privacy
    assert by_set["hotel"] == {"no-room-numbers"}                       # only the behavior is
    assert by_set["guest_chats"] == {"no-room-numbers"}
    assert by_set["after_refusal"] == {"no-room-numbers", "no-loops", "signs-off"}  # tagged privacy too
    # not signs-off itself: only its absence on the after_refusal follow-ups (answered, outside its applies_to)
    assert set(picked.thresholds) == {"no-room-numbers", "no-room-numbers/contrast", "no-loops", "signs-off/elsewhere"}


def test_the_scorecard_groups_by_tag(tmp_path):
    spec, responses = _concierge_responses(tmp_path)
    md = tmp_path / "card.md"
    result = runner.invoke(app, ["check", str(spec), "--responses", str(responses), "--by-tag", "--md", str(md)])
    assert re.search(r"by tag", result.output) and re.search(r"privacy\s", result.output)
    assert "| privacy |" in md.read_text() and "| multi-turn |" in md.read_text()


# ---------------------------------------------------------------- init's $schema, preview with a foreign template

def test_init_writes_a_schema_path_that_survives_moving_the_project(tmp_path):
    project = tmp_path / "project"
    assert runner.invoke(app, ["init", "bot", "--dir", str(project / "specs")]).exit_code == 0
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.move(str(project), str(moved))
    spec = moved / "specs" / "bot.yaml"
    (line,) = [line for line in spec.read_text().splitlines() if "$schema=" in line]
    target = spec.parent / line.split("$schema=", 1)[1].strip()
    assert not Path(line.split("$schema=", 1)[1].strip()).is_absolute() and target.is_file()
    assert json.loads(target.read_text()) == json.loads(runner.invoke(app, ["schema"]).output)


def test_preview_with_a_foreign_template_converts_cleanly(train_spec):
    from behavio.train.preview import build_previews, render_plain

    (preview,) = build_previews(train_spec(), count=1, template="llama3")  # the model's own template is ChatML
    text = render_plain(preview)
    assert "<|im_start|>" not in text and "<|im_end|>" not in text and text.count("<|begin_of_text|>") == 1
    assert any("added as special tokens" in n for n in preview.notes)
    (native,) = build_previews(train_spec(), count=1)
    assert preview.total_tokens < native.total_tokens + 8  # every llama3 marker is one token, not spelled out
    result = runner.invoke(app, ["preview", str(train_spec()), "-n", "1", "--plain", "--template", "llama3"])
    assert result.exit_code == 0 and "note: chat template llama3" in result.output


def test_the_new_shipped_specs_pass_validate_strict():
    specs = [str(ROOT / "specs" / name) for name in ("trail_guide.yaml", "concierge_chat.yaml")]
    result = runner.invoke(app, ["validate", "--strict", *specs])
    assert result.exit_code == 0, result.output


def test_a_repeated_probe_is_one_warning_at_its_first_repeat(tmp_path):
    """Scored once and said once, however often it is given (a 20,000-item list once took minutes to compile:
    one warning per copy, each checked against all the others)."""
    probes = ["Can I get a refund?", "Where is my refund?", "Can I get a refund?"] + ["Where is my refund?"] * 5000
    text = SUPPORT + "probes:\n  refunds: " + json.dumps(probes) + "\n"
    compiled = compile_spec(_support(tmp_path, text))
    warnings = [str(w) for w in compiled.warnings if w.name == "probe-repeated"]
    assert [w.split(": ", 1)[1] for w in warnings] == [
        "probes.refunds[2]: probe 'Can I get a refund?' is given twice; scored once",
        "probes.refunds[3]: probe 'Where is my refund?' is given 5001 times; scored once"]


def test_a_set_whose_own_subject_is_held_out_is_not_told_to_reword_it(tmp_path):
    """redline's booking set lost 'the fuel policy' to split.subjects: its own subject, inside no other, so the
    warning says it was held out, not that it sits inside another."""
    (tmp_path / "few.yaml").write_text("""\
spec: few
system: "You are a car hire company's assistant."
prompts:
  booking:
    frames: {library: questions, subjects: [the fuel policy, child seats, one-way hire, young drivers, the deposit],
             per_frame: 1, limit: 6}
answers:
  booking: {source: literal, template: "Here is our policy on {{ row.subject }}."}
behaviors:
  - {id: no-loops, kind: no_repetition}
split: {seed: 5}
""")
    result = compile_spec(tmp_path / "few.yaml")
    (small,) = [w for w in result.warnings if w.name == "small-split"]
    held = json.loads(result.files["manifest.json"])["held_out_subjects"]
    assert len(held) == 1 and f"name a held-out subject: {held[0]!r}" in small.message, small.message
    assert "sits inside another" not in small.message and "held out by split.subjects" in small.message


def test_each_decision_line_no_probe_asks_is_named_and_a_probed_one_is_not(tmp_path):
    """A refusal and its contrast without hand-written probes: both lines named, with the sets to key probes by;
    probes on the refused set silence its line only; the plain lines (no decision) are never named."""
    def unprobed(text):
        return [w.message for w in compile_spec(_support(tmp_path, text)).warnings if w.name == "unprobed"]

    bare = unprobed(SUPPORT)
    assert len(bare) == 2
    assert "'no-refunds'" in bare[0] and "(refunds)" in bare[0] and "`probes:`" in bare[0]
    assert "'no-refunds/contrast'" in bare[1] and "(questions)" in bare[1]
    (tmp_path / "probes.yaml").write_text('refund: ["can i get my money back for the blue one", "refund pls"]\n')
    probed = SUPPORT.replace("split:", "probes: {refunds: {file: probes.yaml, key: refund}}\nsplit:")
    (left,) = unprobed(probed)
    assert "'no-refunds/contrast'" in left
    quiet = probed.replace("split:", "ignore_warnings: [unprobed]\nsplit:")
    assert unprobed(quiet) == []


def test_a_decision_line_with_fewer_than_ten_probes_is_named_with_its_count(tmp_path):
    """Two refund probes: the refusal's line is named as few-probes (one probe is 50 points of it); ten are
    enough, and the warning can be accepted by name."""
    def few(probes: int, extra: str = ""):
        lines = ", ".join(f'"refund me for order {n}"' for n in range(probes))
        (tmp_path / "probes.yaml").write_text(f"refund: [{lines}]\n")
        text = SUPPORT.replace("split:", f"probes: {{refunds: {{file: probes.yaml, key: refund}}}}\n{extra}split:")
        return [w.message for w in compile_spec(_support(tmp_path, text)).warnings if w.name == "few-probes"]

    (two,) = few(2)
    assert "'no-refunds'" in two and "2 hand-written probe(s)" in two and "50 points" in two and "(refunds)" in two
    assert few(10) == [] and few(9) != []
    assert few(2, "ignore_warnings: [few-probes]\n") == []
