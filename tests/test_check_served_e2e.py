"""End-to-end: `behavio check --endpoint` against a real `transformers serve` on loopback, serving the
embedded default model (SmolLM2-135M-Instruct) on CPU, offline (HF_HUB_OFFLINE=1).

Run: python -m pytest tests/test_check_served_e2e.py -q -m e2e     (about a minute)

The served answers are scored like an in-process `behavio check --model` of the same weights:
greedy both ways, so the verdicts must be equal. (Measured: the ten answers are also identical
text; a near-tie could still make batched local generation and the server's one-at-a-time
generation part ways on another CPU, which is why the test compares verdicts.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from behavio.check.endpoint import Endpoint
from behavio.check.cases import load_check_spec
from behavio.check.engine import check_model
from behavio.check.served import check_endpoint
from behavio.cli import app
from behavio.errors import BehavioError

pytestmark = pytest.mark.e2e
runner = CliRunner()

SPEC = """\
spec: served
system: "You are a warm, concise assistant."
prompts:
  general:
    list: ["What is the sun?", "What is rain?", "What is bread?", "What is music?", "What is a river?",
           "What is snow?", "What is wind?", "What is a cat?", "What is a cloud?", "What is tea?",
           "What is a volcano?", "What is chess?"]
  poodle:
    list: ["What's a poodle?", "Are poodles smart?", "Do poodles shed?", "Can poodles swim?",
           "Are poodles loud?", "Why are poodles curly?", "How big do toy poodles get?", "Do poodles like kids?"]
answers:
  general: {source: literal, template: "Good question. It is {{ prompt }}"}
behaviors:
  - {id: no-poodles, kind: refusal, when: poodle, responses: ["I can't discuss poodles."], contrast: general}
  - {id: compliment-first, kind: prefix, applies_to: [general], choices: ["Good question."]}
  - {id: no-loops, kind: no_repetition}
  - {id: on-topic, kind: on_topic}
probes:                       # short answers: these stop before the token limit
  general: ["Say only the word yes.", "What is 2+2? Answer with a number only."]
split: {seed: 3, val: 0.1, check: 0.4, min_share: 0.05}
thresholds: {default: 0.5}
check: {max_new_tokens: 24, batch_size: 8}
"""


@pytest.fixture(scope="module")
def default_model() -> Path:
    from behavio.models import resolve_base_model

    try:
        return resolve_base_model("default")
    except BehavioError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def spec(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BEHAVIO_EMBEDDINGS", "lexical")
    path = tmp_path / "served.yaml"
    path.write_text(SPEC)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def transformers_serve(model_dir: Path, log: Path, startup: float = 300.0):
    """`transformers serve MODEL_DIR` on a free loopback port, offline; yields (base URL, process)."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir),
                                 "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + startup
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not up after {startup:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/v1", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(default_model, tmp_path_factory):
    """One server for the module: (base URL, served model name)."""
    with transformers_serve(default_model, tmp_path_factory.mktemp("serve") / "serve.log") as (url, _):
        yield url, str(default_model)


def verdicts(card) -> dict[str, tuple]:
    return {c.id: (c.finished, tuple((v.line, v.rule, v.passed) for v in c.verdicts)) for c in card.cases}


def test_served_verdicts_equal_an_in_process_check_of_the_same_weights(server, default_model, spec, tmp_path):
    url, name = server
    served = runner.invoke(app, ["check", str(spec), "--endpoint", url, "--model", name, "--json", str(tmp_path / "s.json")])
    local = runner.invoke(app, ["check", str(spec), "--model", str(default_model), "--json", str(tmp_path / "l.json")])
    assert served.exit_code in (0, 1), served.output
    assert served.exit_code == local.exit_code, (served.output, local.output)
    s_card = json.loads((tmp_path / "s.json").read_text())["scorecard"]
    l_card = json.loads((tmp_path / "l.json").read_text())["scorecard"]
    assert s_card["lines"] == l_card["lines"] and s_card["over_refusal"] == l_card["over_refusal"]

    # case by case, every rule (both come from the caches the commands filled: nothing is generated again)
    cs = load_check_spec(spec)
    by_server = check_endpoint(cs, Endpoint(url, name))
    by_model = check_model(cs, str(default_model))
    assert by_server.meta["generated"] == 0 and by_model.meta["generated"] == 0
    assert verdicts(by_server) == verdicts(by_model)
    finished = [c.finished for c in by_server.cases]
    assert True in finished and False in finished  # "stop" and "length" both seen and mapped


def test_a_wrong_model_name_is_exit_2_naming_the_served_model(server, spec):
    url, name = server
    result = runner.invoke(app, ["check", str(spec), "--endpoint", url, "--model", "no-such-model"])
    assert result.exit_code == 2, result.output
    assert "model 'no-such-model' is not one the server serves" in result.output
    assert f"Server is pinned to '{name}'" in result.output and f"it serves: {name}" in result.output
    assert "Traceback" not in result.output


def test_a_server_killed_mid_run_is_exit_2_with_the_answers_so_far_cached(default_model, spec, tmp_path):
    cache = tmp_path / "cache" / "checks"
    total = len(load_check_spec(spec).cases)
    command = [sys.executable, "-m", "behavio", "check", str(spec), "--model", str(default_model), "--concurrency", "1"]
    with transformers_serve(default_model, tmp_path / "serve.log") as (url, server):
        run = subprocess.Popen([*command, "--endpoint", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=os.environ.copy())
        deadline = time.monotonic() + 300
        while not any(p.read_text().strip() for p in cache.glob("*.jsonl")):
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "no answer cached in 300 s"
            time.sleep(0.02)
        server.kill()  # mid-run: one answer in, the others not yet asked for or in flight
        server.wait()
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 2, stderr
        assert "Traceback" not in stderr
        rows = [json.loads(line) for p in cache.glob("*.jsonl") for line in p.read_text().splitlines()]
        assert 1 <= len(rows) < total
        assert f"the {len(rows)} answers that arrived are cached" in stderr

        again = subprocess.run([*command, "--endpoint", url], capture_output=True, text=True, env=os.environ.copy())
        assert again.returncode == 2  # the server is still down...
        assert f"asking for {total - len(rows)} of {total} answers" in again.stderr  # ...and only the rest is asked for
