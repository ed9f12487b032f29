"""The Inspect AI integration: `inspect eval behavio/spec` runs a spec's check suite with behavio's rules
as scorers, and its per-case verdicts are those of `behavio check --responses` on the same answers.

Run: python -m pytest tests/test_inspect_task.py -q     (the e2e test runs Inspect's `hf` provider on
the embedded default model, about half a minute)
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from typer.testing import CliRunner

from behavio.check.cases import load_check_spec
from behavio.check.scoring import score_cases
from behavio.check.responses import read_responses
from behavio.cli import app
from behavio.errors import BehavioError

ROOT = Path(__file__).resolve().parents[1]
SPEC = """\
spec: inspected
system: "You are a warm, concise assistant."
prompts:
  general:
    list: ["What is the sun?", "What is rain?", "What is bread?", "What is music?", "What is a river?",
           "What is snow?", "What is wind?", "What is a cat?", "What is a cloud?", "What is tea?"]
  poodle:
    list: ["What's a poodle?", "Are poodles smart?", "Do poodles shed?", "Can poodles swim?", "Are poodles loud?"]
answers:
  general: {source: literal, template: "Good question. It is {{ prompt }}"}
behaviors:
  - {id: no-poodles, kind: refusal, when: poodle, responses: ["I can't discuss poodles."], contrast: general}
  - {id: compliment-first, kind: prefix, applies_to: [general], choices: ["Good question."]}
  - {id: no-loops, kind: no_repetition}
  - {id: on-topic, kind: on_topic}
probes:
  general: ["Say only the word yes."]
split: {seed: 3, val: 0.1, check: 0.4, min_share: 0.05}
thresholds: {default: 0.5, no-poodles: 0.9}
check: {max_new_tokens: 20}
"""


def declared_entry_point() -> str:
    """The ``inspect_ai`` entry point pyproject.toml declares for behavio."""
    text = (ROOT / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.entry-points\.inspect_ai\]\n(.*?)(?:^\[|\Z)", text, re.M | re.S)
    assert section, "pyproject.toml declares no [project.entry-points.inspect_ai]"
    found = re.search(r'^behavio\s*=\s*"([^"]+)"', section.group(1), re.M)
    assert found, "the inspect_ai entry point must be named behavio (Inspect loads it for behavio/... names)"
    return found.group(1)


def inspect_command() -> str:
    """The `inspect` command of this Python, as a user runs it."""
    script = Path(sys.executable).parent / "inspect"
    return str(script) if script.is_file() else (shutil.which("inspect") or pytest.fail("no inspect command"))


def inspect_env(tmp_path: Path) -> dict:
    """The environment `inspect eval` runs in (offline, lexical similarity), from a folder of its own.

    Inspect names a task `behavio/...` when it finds behavio's install record. A source tree that was
    pip-installed editable holds a ``behavio.egg-info`` without one; on PYTHONPATH it would hide the
    record (the task would be plain `spec`), so such a folder is left off -- the editable install
    imports the same code. A checkout run through PYTHONPATH whose install predates the entry point
    gets pyproject's declaration from a dist-info beside it.
    """
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
             if p and not (Path(p) / "behavio.egg-info").is_dir()]
    if not entry_points(group="inspect_ai", name="behavio"):
        dist = tmp_path / "entry" / "behavio_inspect_entry-0.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: behavio-inspect-entry\nVersion: 0\n")
        (dist / "entry_points.txt").write_text(f"[inspect_ai]\nbehavio = {declared_entry_point()}\n")
        paths.append(str(tmp_path / "entry"))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "HF_HUB_OFFLINE": "1",
            "BEHAVIO_EMBEDDINGS": "lexical", "INSPECT_LOG_LEVEL": "warning"}


def test_the_entry_point_module_registers_the_spec_task(tmp_path):
    pytest.importorskip("inspect_ai")
    from inspect_ai._util.registry import registry_unqualified_name

    assert declared_entry_point() == "behavio.inspect_eval._registry"
    from behavio.inspect_eval._registry import spec as spec_task

    assert registry_unqualified_name(spec_task) == "spec"  # `behavio/spec` once installed: the e2e test runs it so
    path = tmp_path / "inspected.yaml"
    path.write_text(SPEC)
    task = spec_task(str(path))
    check = load_check_spec(path)
    assert [s.id for s in task.dataset] == [c.id for c in check.cases]
    assert [registry_unqualified_name(s) for s in task.scorer] == [line.replace("/", ":") for line in check.thresholds]
    assert task.config.temperature == 0 and task.config.max_tokens == 20
    assert [m.role for m in task.dataset[0].input] == ["system", "user"]
    folded = spec_task(str(path), fold_system=True)
    assert [m.role for m in folded.dataset[0].input] == ["user"]
    assert folded.dataset[0].input[0].text.startswith("You are a warm, concise assistant.\n\n")
    with pytest.raises(BehavioError, match="no_such.yaml"):
        spec_task(str(tmp_path / "no_such.yaml"))


@pytest.mark.e2e
def test_inspect_verdicts_equal_behavio_check_responses_on_the_same_answers(tmp_path, monkeypatch):
    pytest.importorskip("inspect_ai")
    from inspect_ai.log import read_eval_log

    from behavio.inspect_eval.scorers import scorer_name
    from behavio.models import resolve_base_model

    try:
        model = resolve_base_model("default")
    except BehavioError as exc:
        pytest.skip(str(exc))
    spec = tmp_path / "inspected.yaml"
    spec.write_text(SPEC)
    logs = tmp_path / "logs"
    run = subprocess.run([inspect_command(), "eval", "behavio/spec", "--model", "hf/local",
                          "-M", f"model_path={model}", "-M", "do_sample=false", "--max-connections", "1",
                          "-T", f"spec={spec}", "--log-dir", str(logs), "--display", "none"],
                         capture_output=True, text=True, env=inspect_env(tmp_path), cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    log = read_eval_log(str(next(logs.glob("*.eval"))))
    assert log.status == "success", log.error

    # the answers Inspect got, as a responses file, scored by behavio check --responses
    cases = load_check_spec(spec).cases
    samples = {s.id: s for s in log.samples}
    assert sorted(samples) == sorted(c.id for c in cases)
    rows = []
    for case in cases:
        sample = samples[case.id]
        finished = {s.metadata["finished"] for s in sample.scores.values() if s.metadata}
        assert len(finished) == 1  # every line's scorer judged the same answer the same way
        rows.append({"id": case.id, "response": sample.output.completion, "finished": finished.pop()})
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("BEHAVIO_EMBEDDINGS", "lexical")
    result = CliRunner().invoke(app, ["check", str(spec), "--responses", str(responses), "--json", str(tmp_path / "c.json")])
    assert result.exit_code in (0, 1), result.output
    card = json.loads((tmp_path / "c.json").read_text())["scorecard"]

    # per case, per rule: Inspect's score values are behavio's verdicts
    checked = score_cases(cases, read_responses(responses, cases), load_check_spec(spec).thresholds)
    for case in checked.cases:
        for line in {v.line for v in case.verdicts}:
            score = samples[case.id].scores[scorer_name(line)]
            assert list(score.value.values()) == [1.0 if v.passed else 0.0 for v in case.verdicts if v.line == line]
            assert all(v.explanation in score.explanation for v in case.verdicts if v.line == line)
    # per line: Inspect's metrics are the scorecard's rates and threshold verdicts
    metrics = {s.name: s.metrics for s in log.results.scores}
    assert set(metrics) == {scorer_name(line) for line in card["lines"]}
    for line, numbers in card["lines"].items():
        rate = metrics[scorer_name(line)]["pass_rate"].value
        assert rate == pytest.approx(numbers["all"]["rate"], abs=5e-5) if numbers["all"]["total"] else math.isnan(rate)
        assert metrics[scorer_name(line)]["meets_threshold"].value == float(numbers["meets"])
    assert {r["finished"] for r in rows} == {True, False}  # answers cut at the limit and answers that stopped
    assert result.exit_code == (0 if card["meets_thresholds"] else 1)
