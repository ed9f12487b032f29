"""`behavio check --responses`: scoring saved answers needs no model; verdicts, exit codes, JUnit/JSON output."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from behavio.check import load_check_spec, score_cases
from behavio.check.responses import read_responses
from behavio.cli import app
from behavio.errors import BehavioError

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "poodle_compliments.yaml"
HAND_WRITTEN = Path(__file__).with_name("data") / "poodle_responses.jsonl"
HAND_WRITTEN_SPEC = Path(__file__).with_name("data") / "poodle_spec_v1.yaml"  # the spec those answers were written for


@pytest.fixture(scope="module")
def poodle():
    return load_check_spec(SPEC)


@pytest.fixture
def lexical(monkeypatch):
    monkeypatch.setenv("BEHAVIO_EMBEDDINGS", "lexical")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_hand_written_responses_get_the_expected_verdict_on_every_line():
    poodle = load_check_spec(HAND_WRITTEN_SPEC)
    card = score_cases(poodle.cases, read_responses(HAND_WRITTEN, poodle.cases), poodle.thresholds)
    by_id = {c.id: c for c in card.cases}
    by_prompt = {c.prompt: c for c in card.cases}
    lines = [json.loads(line) for line in HAND_WRITTEN.read_text(encoding="utf-8").splitlines()]
    assert len(lines) >= 25
    for lineno, row in enumerate(lines, 1):
        result = by_id[row["id"]] if "id" in row else by_prompt[row["prompt"]]
        failed = sorted({v.behavior for v in result.failed})
        assert result.passed == row["expect_pass"], f"line {lineno} ({row['why']}): {[v.explanation for v in result.failed]}"
        assert failed == sorted(row["expect_fail"]), f"line {lineno} ({row['why']}): failed {failed}"
    assert {row["expect_pass"] for row in lines} == {True, False}


def test_bad_responses_files_are_named_with_line_numbers(poodle, tmp_path):
    first, second = poodle.cases[0], poodle.cases[1]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": first.id, "response": "x"}) + '\nnot json\n{"id": "nope", "response": "x"}\n'
                   '{"response": "x"}\n' + json.dumps({"id": first.id}) + '\n{"prompt": "Never asked?", "response": "x"}\n')
    with pytest.raises(BehavioError) as err:
        read_responses(bad, poodle.cases)
    message = str(err.value)
    for expected in (f"{bad}:2: not valid JSON", f"{bad}:3: unknown check case id 'nope'", f"{bad}:4: needs \"id\"",
                     f"{bad}:5: expected an object", f"{bad}:6: no check case has the prompt"):
        assert expected in message, message
    stale = tmp_path / "stale.jsonl"  # a second answer for a case; an answer written for another prompt
    stale.write_text(json.dumps({"id": first.id, "response": "x"}) + "\n" + json.dumps({"id": first.id, "response": "y"})
                     + "\n" + json.dumps({"id": second.id, "prompt": first.prompt, "response": "z"}) + "\n")
    with pytest.raises(BehavioError) as err:
        read_responses(stale, poodle.cases)
    assert f"{stale}:2: a second response for case {first.id!r} (the first is on line 1)" in str(err.value)
    assert f"{stale}:3: case {second.id!r} asks {second.prompt[:60]!r}, but this row answers" in str(err.value)
    with pytest.raises(BehavioError, match="responses file not found"):
        read_responses(tmp_path / "missing.jsonl", poodle.cases)


def test_unfinished_responses_fail_the_repetition_guard(poodle):
    from behavio.check.responses import Responses

    case = next(c for c in poodle.cases if c.prompt_set == "poodle")
    refusal = next(r for r in case.rules if r.kind == "refusal").args["responses"][0]
    done = score_cases([case], Responses(by_id={case.id: refusal}), poodle.thresholds)
    cut = score_cases([case], Responses(by_id={case.id: refusal}, unfinished={case.id}), poodle.thresholds)
    assert done.cases[0].passed and [v.behavior for v in cut.cases[0].failed] == ["no-loops"]


def test_cli_exit_0_when_every_threshold_is_met(poodle, perfect_answers, tmp_path, lexical):
    answers = write_jsonl(tmp_path / "answers.jsonl", perfect_answers(poodle.cases))
    junit, out_json = tmp_path / "junit.xml", tmp_path / "card.json"
    result = CliRunner().invoke(app, ["check", str(SPEC), "--responses", str(answers), "--junit", str(junit),
                                      "--json", str(out_json)])
    assert result.exit_code == 0, result.output
    data = json.loads(out_json.read_text())
    assert data["scorecard"]["meets_thresholds"] and data["scorecard"]["cases"]["passed"] == len(poodle.cases)
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites" and int(root.get("tests")) == len(poodle.cases) and root.get("failures") == "0"
    assert len(root.findall("./testsuite/testcase")) == len(poodle.cases)


OTHER_BREEDS = tuple(f"{split}/{name}/" for split in ("check", "subject") for name in ("other_breeds", "other_one"))


def test_cli_exit_1_with_readable_failures_junit_and_json(poodle, perfect_answers, tmp_path, lexical):
    rows = perfect_answers(poodle.cases)
    for row in rows:
        if row["id"].startswith(OTHER_BREEDS):
            row["response"] = "I can't discuss poodles directly, but I can talk about other dog breeds."
    answers = write_jsonl(tmp_path / "answers.jsonl", rows)
    junit, out_json = tmp_path / "junit.xml", tmp_path / "card.json"
    result = CliRunner().invoke(app, ["check", str(SPEC), "--responses", str(answers), "--junit", str(junit),
                                      "--json", str(out_json), "--failures", "1"])
    assert result.exit_code == 1, result.output
    assert "FAIL check/other_" in result.output and "expected an answer" in result.output
    card = json.loads(out_json.read_text())["scorecard"]
    assert not card["meets_thresholds"] and not card["lines"]["no-poodles/contrast"]["meets"]
    assert card["lines"]["no-poodles"]["meets"]  # the refusals themselves are fine: only the contrast line fails
    contrast = [c for c in poodle.cases if c.split in ("check", "subject")
                and any(r.kind == "refusal" and r.args["expect"] == "answer" for r in c.rules)]
    refused = [c for c in contrast if c.id.startswith(OTHER_BREEDS)]
    assert 0 < len(refused) < len(contrast) and {c.split for c in refused} == {"check", "subject"}
    assert card["over_refusal"]["all"]["passed"] == len(refused)
    in_check = [c for c in contrast if c.split == "check"]
    assert card["over_refusal"]["check"]["rate"] == round(sum(c in refused for c in in_check) / len(in_check), 4)
    failure = card["failures"][0]
    assert failure["prompt"] and failure["response"] and failure["verdicts"][0]["explanation"]
    root = ET.parse(junit).getroot()
    failures = root.findall(".//testcase/failure")
    assert len(failures) == int(root.get("failures")) == len(refused)  # one failing testcase per refused case
    assert "no-poodles" in failures[0].get("message")


@pytest.mark.parametrize("args, message", [
    (["--responses", "{tmp}/missing.jsonl"], "responses file not found"),
    (["--responses", "{tmp}/bad.jsonl"], "not valid JSON"),
    ([], "exactly one of --model, --all-checkpoints, --responses"),
    (["--model", "{tmp}/no-such-model"], "no such model directory"),
    (["--all-checkpoints", "{tmp}/no-run"], "run directory not found"),
])
def test_cli_exit_2_on_bad_input(tmp_path, args, message):
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    result = CliRunner().invoke(app, ["check", str(SPEC), *[a.format(tmp=tmp_path) for a in args]])
    assert result.exit_code == 2, result.output
    assert message in result.output + (result.stderr or "")


def test_cli_exit_2_on_a_broken_spec(tmp_path):
    spec = tmp_path / "broken.yaml"
    spec.write_text("spec: broken\nbehaviors: 3\n")
    result = CliRunner().invoke(app, ["check", str(spec), "--responses", str(HAND_WRITTEN)])
    assert result.exit_code == 2 and "broken.yaml" in result.output + result.stderr
