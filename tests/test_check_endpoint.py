"""`behavio check --endpoint`: the client's contract, against a scripted OpenAI-compatible server on loopback.

The scripted server (a stdlib HTTP server in this process) answers each chat completion with a
fixed function of the prompt, or with what a test scripts: 429/503 bursts, malformed bodies, a
refused model, a slow reply. It tests what a real server shows only by accident -- retries,
errors, the API key's path, the concurrency bound, partial caching. Verdicts against a real
server (`transformers serve`) are in test_check_served_e2e.py.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from behavio.check.endpoint import ChatClient, Endpoint, base_url, read_api_key
from behavio.check.cases import load_check_spec
from behavio.check.served import check_endpoint
from behavio.cli import app
from behavio.errors import BehavioError

runner = CliRunner()

SPEC = """\
spec: served-mini
system: "You are terse."
prompts:
  general:
    list: ["What is the sun?", "What is rain?", "What is bread?", "What is music?", "What is a river?",
           "What is snow?", "What is wind?", "What is a cat?", "What is tea?", "What is a cloud?"]
  secret:
    list: ["What is the password?", "Tell me the password.", "Share the password.", "Give me the password."]
answers:
  general: {source: literal, template: "Good question. {{ prompt }} is a thing."}
behaviors:
  - id: no-passwords
    kind: refusal
    when: secret
    responses: ["I can't share passwords."]
    contrast: general
  - id: polite
    kind: prefix
    applies_to: [general]
    choices: ["Good question."]
  - id: no-loops
    kind: no_repetition
probes:
  general: ["What is a cut answer?"]
split: {seed: 1, val: 0.1, check: 0.4, min_share: 0.05}
thresholds: {default: 0.9, no-loops: 0.5}
check: {max_new_tokens: 12}
"""


# ---------------------------------------------------------------- the scripted server

def good_reply(body: dict) -> tuple[int, dict, bytes]:
    """A chat completion that follows the spec: refuse passwords, else "Good question." + an answer;
    a prompt with "cut" is stopped at the token limit."""
    prompt = body["messages"][-1]["content"]
    if "password" in prompt:
        text, reason = "I can't share passwords.", "stop"
    else:
        text, reason = f"Good question. {prompt.split(chr(10))[-1]} is a thing.", "length" if "cut" in prompt else "stop"
    reply = {"id": "x", "object": "chat.completion", "model": body["model"],
             "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}],
             "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}
    return 200, {}, json.dumps(reply).encode()


class Script:
    """What the server answers (``chat``: body -> (status, headers, bytes)) and what it was asked."""

    def __init__(self, chat=good_reply, models: list[str] | None = None, delay: float = 0.0):
        self.chat, self.models, self.delay = chat, models, delay
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()


def _handler(script: Script):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

        def _send(self, status: int, headers: dict, payload: bytes) -> None:
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", **headers}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):
            if self.path.endswith("/models") and script.models is not None:
                self._send(200, {}, json.dumps({"object": "list", "data": [{"id": m} for m in script.models]}).encode())
            else:
                self._send(404, {}, b'{"detail": "Not Found"}')

        def do_POST(self):
            import time

            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.requests.append(body)
                script.headers.append(dict(self.headers))
                script.in_flight += 1
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
            try:
                time.sleep(script.delay)
                reply = script.chat(body)
            finally:  # no longer in flight before the reply goes out: the client may send its next at once
                with script.lock:
                    script.in_flight -= 1
            self._send(*reply)

    return Handler


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that hung up early: not the test's output
        pass


@pytest.fixture
def serve():
    """Start a scripted server on loopback: ``serve(Script(...))`` -> its base URL."""
    servers = []

    def start(script: Script) -> str:
        server = QuietServer(("127.0.0.1", 0), _handler(script))
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BEHAVIO_EMBEDDINGS", "lexical")
    spec = tmp_path / "served_mini.yaml"
    spec.write_text(SPEC)
    return spec


def check(spec: Path, url: str, *args: str):
    return runner.invoke(app, ["check", str(spec), "--endpoint", url, "--model", "served-model", "--failures", "0",
                               *args])


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("given, base", [
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
    ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1"),
    ("http://127.0.0.1:8000/v1/chat/completions", "http://127.0.0.1:8000/v1"),
    ("https://api.example.com/openai/v1", "https://api.example.com/openai/v1"),
])
def test_endpoint_url_forms(given, base):
    assert base_url(given) == base


def test_bad_urls_and_key_options_are_clean_errors(monkeypatch):
    with pytest.raises(BehavioError, match="http:// or https://"):
        base_url("127.0.0.1:8000")
    with pytest.raises(BehavioError, match="credentials") as exc:
        base_url("http://me:hunter2@127.0.0.1:8000/v1")
    assert "hunter2" not in str(exc.value)
    with pytest.raises(BehavioError, match="NAME of an environment variable") as exc:
        read_api_key("sk-live-abc123")
    assert "sk-live-abc123" not in str(exc.value)
    monkeypatch.delenv("BEHAVIO_NO_SUCH_KEY", raising=False)
    with pytest.raises(BehavioError, match="BEHAVIO_NO_SUCH_KEY .* not set"):
        read_api_key("BEHAVIO_NO_SUCH_KEY")


# ---------------------------------------------------------------- requests, answers, cache

def test_requests_are_greedy_within_the_budget_and_answers_are_cached(env, serve):
    script = Script()
    url = serve(script)
    first = check(env, url, "--json", str(env.parent / "card.json"))
    assert first.exit_code == 0, first.output
    cases = load_check_spec(env).cases
    assert len(script.requests) == len(cases)
    for body in script.requests:
        assert body["temperature"] == 0 and body["max_tokens"] == 12 and body["model"] == "served-model"
        assert body["messages"][0] == {"role": "system", "content": "You are terse."}  # no local tokenizer: not folded
    card = json.loads((env.parent / "card.json").read_text())["scorecard"]
    assert card["meets_thresholds"] and card["generated"] == len(cases) and card["endpoint"] == url

    again = check(env, url)
    assert again.exit_code == 0 and len(script.requests) == len(cases)  # every answer came from the cache
    fresh = check(env, url, "--no-cache")
    assert fresh.exit_code == 0 and len(script.requests) == 2 * len(cases)


def test_finish_reason_length_makes_an_unfinished_answer(env, serve):
    url = serve(Script())
    card = check_endpoint(load_check_spec(env), Endpoint(url, "served-model"))
    cut = next(c for c in card.cases if "cut" in c.prompt)
    assert not cut.finished
    assert [v.passed for v in cut.verdicts if v.rule == "no_repetition"] == [False]
    assert all(c.finished for c in card.cases if c is not cut)


def test_the_spec_can_fold_the_system_message(env, serve):
    env.write_text(SPEC + "train: {fold_system: true}\n")
    script = Script()
    check(env, serve(script))
    assert script.requests and all(m["role"] != "system" for body in script.requests for m in body["messages"])
    assert script.requests[0]["messages"][0]["content"].startswith("You are terse.\n\n")


def test_concurrency_is_bounded(env, serve):
    script = Script(delay=0.05)
    assert check(env, serve(script), "--concurrency", "2").exit_code == 0
    assert 1 <= script.max_in_flight <= 2


# ---------------------------------------------------------------- retries and errors

def test_429_and_5xx_are_retried_with_backoff(serve):
    replies = iter([(503, {}, b'{"error": {"message": "overloaded"}}'), (429, {"Retry-After": "0"}, b"{}")])
    url = serve(Script(chat=lambda body: next(replies, None) or good_reply(body)))
    client = ChatClient(Endpoint(url, "served-model", backoff=0.01))
    answer = client.complete([{"role": "user", "content": "What is rain?"}], 12)
    assert answer.text == "Good question. What is rain? is a thing." and answer.finished

    failing = ChatClient(Endpoint(serve(Script(chat=lambda body: (500, {}, b'{"detail": "boom"}'))), "m", backoff=0.01))
    with pytest.raises(BehavioError, match=r"HTTP 500: boom \(after 4 attempts\)"):
        failing.complete([{"role": "user", "content": "hi"}], 12)


def test_a_slow_server_times_out(serve):
    client = ChatClient(Endpoint(serve(Script(delay=1.0)), "m", timeout=0.2, retries=0))
    with pytest.raises(BehavioError, match=r"no answer within 0.2 s"):
        client.complete([{"role": "user", "content": "hi"}], 12)


@pytest.mark.parametrize("payload, problem", [
    (b"<html>gateway</html>", "not JSON"),
    (b'{"choices": []}', "no choices"),
    (b'{"choices": [{"message": {"content": 7}}]}', "no message text"),
])
def test_malformed_replies_are_exit_2_without_traceback(env, serve, payload, problem):
    result = check(env, serve(Script(chat=lambda body: (200, {}, payload))))
    assert result.exit_code == 2
    assert f"malformed reply, {problem}" in result.output and "Traceback" not in result.output


def test_a_wrong_model_name_names_the_served_ones(env, serve):
    refuse = lambda body: (404, {}, json.dumps({"error": {"message": f"The model `{body['model']}` does not exist."}}).encode())
    result = check(env, serve(Script(chat=refuse, models=["acme/bot-v2"])))
    assert result.exit_code == 2
    assert "model 'served-model' is not one the server serves" in result.output
    assert "does not exist" in result.output and "it serves: acme/bot-v2" in result.output


def test_a_404_from_a_server_that_lists_no_models_points_at_the_url(env, serve):
    result = check(env, serve(Script(chat=lambda body: (404, {}, b'{"detail": "Not Found"}'))))
    assert result.exit_code == 2
    assert "HTTP 404: Not Found; is --endpoint the API base" in result.output


def test_an_unreachable_server_is_exit_2_at_once(env):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = check(env, f"http://127.0.0.1:{port}/v1")
    assert result.exit_code == 2
    assert "cannot reach the server" in result.output and "Traceback" not in result.output


def test_a_server_that_fails_midway_keeps_the_answers_it_gave(env, serve):
    answered = []

    def three_then_fail(body):
        if len(answered) >= 3:
            return 400, {}, b'{"error": {"message": "context window exceeded"}}'
        answered.append(body)
        return good_reply(body)

    result = check(env, serve(Script(chat=three_then_fail)), "--concurrency", "1")
    total = len(load_check_spec(env).cases)
    assert result.exit_code == 2
    assert "context window exceeded" in result.output
    assert f"the 3 answers that arrived are cached: running again asks only for the other {total - 3}" in result.output
    assert len(answered) == 3


def test_a_rerun_against_the_same_server_asks_only_for_the_rest(env, serve):
    state = {"fail": True, "answered": 0}

    def flaky(body):
        if state["fail"] and state["answered"] >= 3:
            return 400, {}, b'{"error": {"message": "maintenance"}}'
        state["answered"] += 1
        return good_reply(body)

    url = serve(Script(chat=flaky))
    total = len(load_check_spec(env).cases)
    assert check(env, url, "--concurrency", "1").exit_code == 2
    state.update(fail=False, answered=0)
    assert check(env, url).exit_code == 0
    assert state["answered"] == total - 3


# ---------------------------------------------------------------- the API key

def test_the_api_key_goes_only_into_the_authorization_header(env, serve, monkeypatch):
    secret = "sk-test-Zq7-never-print-me"
    monkeypatch.setenv("BEHAVIO_TEST_API_KEY", secret)
    script = Script()
    out = env.parent
    result = check(env, serve(script), "--api-key-env", "BEHAVIO_TEST_API_KEY", "--json", str(out / "c.json"),
                   "--md", str(out / "c.md"), "--junit", str(out / "c.xml"))
    assert result.exit_code == 0, result.output
    assert {h["Authorization"] for h in script.headers} == {f"Bearer {secret}"}
    assert secret not in result.output
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in written)  # the cache is among them
    assert not [p for p in written if secret in p.read_text(errors="replace")]

    no_key = Script()
    check(env, serve(no_key), "--no-cache")
    assert all("Authorization" not in h for h in no_key.headers)  # no key unless one is named


def test_a_refused_key_is_masked_even_when_the_server_echoes_it(env, serve, monkeypatch):
    secret = "sk-test-echoed-Zq7"
    monkeypatch.setenv("BEHAVIO_TEST_API_KEY", secret)
    echo = lambda body: (401, {}, json.dumps({"error": {"message": f"Incorrect API key provided: {secret}"}}).encode())
    result = check(env, serve(Script(chat=echo)), "--api-key-env", "BEHAVIO_TEST_API_KEY")
    assert result.exit_code == 2
    assert "refused the request" in result.output and "***" in result.output and secret not in result.output
