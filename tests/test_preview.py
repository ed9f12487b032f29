"""`behavio preview`: training examples with exactly the trained tokens highlighted."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from behavio.cli import app
from behavio.train.preview import PLACEHOLDER, build_previews, render_plain


def test_sft_preview_highlights_only_the_assistant_turn(train_spec):
    previews = build_previews(train_spec(), count=2)
    assert len(previews) == 2
    for preview in previews:
        text = render_plain(preview)
        trained = re.findall(r"\[\[(.*?)\]\]", text, flags=re.S)
        assert len(trained) == 1 and trained[0].endswith("<|im_end|>")
        assert trained[0].startswith(("Good question.", "I can't discuss poodles."))
        assert "You are a terse assistant." in text and "You are a terse assistant." not in trained[0]
        assert 0 < preview.trained_tokens < preview.total_tokens


def test_dpo_preview_shows_both_sides_with_placeholders_for_model_answers(train_spec):
    previews = build_previews(train_spec(), count=3, stage="dpo")
    assert [p.id.rsplit(" ", 1)[1] for p in previews] == ["(chosen)", "(rejected)"] * 3
    assert all("<<behavio:pending:" not in render_plain(p) for p in previews)
    if any(PLACEHOLDER in render_plain(p) for p in previews):
        assert any(f"[[{PLACEHOLDER}" in render_plain(p) for p in previews)


@pytest.mark.parametrize("template, end", [("llama3", "<|eot_id|>"), ("gemma", "<end_of_turn>")])
def test_preview_with_another_template_folds_the_system_message_where_needed(train_spec, template, end):
    (preview,) = build_previews(train_spec(), count=1, template=template)
    text = render_plain(preview)
    assert re.search(r"\[\[[^\]]*" + re.escape(end), text)
    if template == "gemma":  # no system role: folded into the user turn, untrained
        assert "<start_of_turn>user\nYou are a terse assistant.\n\nWhat is" in text


def test_preview_command_prints_plain_marks(train_spec):
    result = CliRunner().invoke(app, ["preview", str(train_spec()), "-n", "1", "--plain"])
    assert result.exit_code == 0, result.output
    assert "tokens trained" in result.output and "[[" in result.output
    bad = CliRunner().invoke(app, ["preview", str(train_spec()), "--stage", "ppo"])
    assert bad.exit_code == 2 and "expected sft or dpo" in bad.output


def test_set_shows_only_that_prompt_sets_examples_and_names_the_others_when_it_has_none(train_spec):
    """Without --set the first examples are one per set in turn; with it, only that set's, however many."""
    previews = build_previews(train_spec(), count=3, prompt_set="poodle")
    assert len(previews) == 3 and all(p.id.startswith("poodle/") for p in previews)
    assert {p.id.split("/")[0] for p in build_previews(train_spec(), count=2)} == {"general", "poodle"}
    bad = CliRunner().invoke(app, ["preview", str(train_spec()), "--set", "poodles"])
    assert bad.exit_code == 2 and "no sft example of that prompt set (did you mean 'poodle'?)" in bad.output
    assert "general" in bad.output


def test_preview_warns_of_the_spec_s_own_answers_the_check_would_cut_off(train_spec):
    """The run's warning about answers longer than check.max_new_tokens, before any training: the literal answers
    are counted, and the base model's are said to be counted at the run."""
    def with_check_tokens(spec, tokens):
        spec.write_text(spec.read_text().replace("check: {max_new_tokens: 8}", f"check: {{max_new_tokens: {tokens}}}"))
        return spec

    assert build_previews(with_check_tokens(train_spec(), 96), count=1)[0].warnings == ()  # every answer fits
    spec = with_check_tokens(train_spec(), 5)
    (warning,) = build_previews(spec, count=1)[0].warnings
    assert "run longer than the check lets an answer write (check.max_new_tokens=5 tokens" in warning
    assert "prompt set 'general'" in warning and "after the fill" not in warning
    result = CliRunner().invoke(app, ["preview", str(spec), "-n", "1", "--plain"])
    assert result.exit_code == 0 and "warning: " in result.output and "shorten them" in result.output
    model_written = with_check_tokens(train_spec(model_answers=True), 5)
    (warning,) = build_previews(model_written, count=1)[0].warnings  # the refusals are the spec's own, and long
    assert "after the fill" in warning
