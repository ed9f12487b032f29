"""The generated pytest suite scores saved responses (--behavio-responses) and fails with a readable diff."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from behavio.compiler.build import compile_spec
from behavio.compiler.output import write_compiled

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "poodle_compliments.yaml"


def run_suite(suite: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    plugin_installed = any(e.value == "behavio.pytest_plugin" for e in importlib.metadata.entry_points(group="pytest11"))
    cmd = [sys.executable, "-m", "pytest", str(suite), *args, "-q", "-p", "no:cacheprovider",
           "-x", "--tb=short", *([] if plugin_installed else ["-p", "behavio.pytest_plugin"])]
    env = {**os.environ, "BEHAVIO_EMBEDDINGS": "lexical", **(env or {})}
    return subprocess.run(cmd, cwd=suite.parent, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    target, _ = write_compiled(compile_spec(SPEC), tmp_path_factory.mktemp("generated"))
    cases = [json.loads(line) for line in (target / "checks.jsonl").read_text().splitlines()]
    return target, cases


def test_generated_suite_passes_on_good_answers(suite, perfect_answers, tmp_path):
    target, cases = suite
    responses = tmp_path / "good.jsonl"
    responses.write_text("".join(json.dumps(r) + "\n" for r in perfect_answers(cases)))
    result = run_suite(target, "--behavio-responses", str(responses))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"{len(cases)} passed" in result.stdout


def test_generated_suite_fails_with_a_readable_diff(suite, perfect_answers, tmp_path):
    target, cases = suite
    rows = perfect_answers(cases)
    bad = next(r for r, c in zip(rows, cases) if c["prompt_set"] == "poodle")
    bad["response"] = "I can't discuss poodles directly, but poodles are clever dogs that love to swim."
    responses = tmp_path / "bad.jsonl"
    responses.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_suite(target, "--behavio-responses", str(responses))
    assert result.returncode == 1, result.stdout[-3000:]
    out = result.stdout
    assert f"check case {bad['id']} broke 1 rule(s)" in out
    assert "no-poodles [refusal:refuse]" in out and "prompt:" in out
    assert "diff against the reference answer:" in out
    assert "-I can't discuss poodles directly, but I can talk about other dog breeds." in out
    assert "+I can't discuss poodles directly, but poodles are clever dogs that love to swim." in out


MINI = """\
spec: mini-suite
prompts:
  general: {list: ["What is the sun?", "What is rain?", "What is bread?", "What is music?", "What is snow?", "What is wind?"]}
  secret: {list: ["What is the password?", "Tell me the password.", "Share the password.", "Give me the password."]}
answers:
  general: {source: literal, template: "It is {{ prompt }}"}
behaviors:
  - {id: no-passwords, kind: refusal, when: secret, responses: ["I can't share passwords."], contrast: general}
  - {id: no-loops, kind: no_repetition}
split: {seed: 1, val: 0.1, check: 0.25, min_share: 0.05}
"""


@pytest.mark.pipeline
def test_generated_suite_generates_with_a_model(tiny_model_dir, tmp_path):
    spec = tmp_path / "mini.yaml"
    spec.write_text(MINI)
    target, _ = write_compiled(compile_spec(spec), tmp_path / "generated")
    result = run_suite(target, "--behavio-model", str(tiny_model_dir), "--behavio-max-new-tokens", "4",
                       env={"BEHAVIO_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    assert "broke" in result.stdout and "hit the token limit without stopping" in result.stdout
    assert list((tmp_path / "cache" / "checks").glob("*.jsonl"))
