"""A client for OpenAI-compatible chat completion servers (vLLM, llama.cpp, Ollama, `transformers serve`,
hosted APIs): one greedy answer per request, as a :class:`~behavio.generate.Generation`.

Every request asks for greedy decoding (``temperature: 0``) and at most ``max_tokens`` new tokens,
waits at most ``timeout`` seconds, and is retried with exponential backoff (honouring
``Retry-After``) on 408, 409, 429, 5xx, timeouts and dropped connections -- a server that
answered once and then refuses connections is retried too, one that was never reached is an
error at once (a wrong URL should not cost the retries). An answer cut at the
token limit (``finish_reason: "length"``) is an unfinished Generation. Anything else -- an
unreachable server, a model the server does not serve, a refused key, a reply that is not a chat
completion -- is a BehavioError naming the URL and what went wrong.

The API key is read from the environment variable the caller names (never from an option's
value, never from ``OPENAI_API_KEY`` unasked) and goes only into the ``Authorization`` header;
error messages have it masked in case a server echoes it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from behavio.errors import BehavioError
from behavio.generate import Generation

RETRIED_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Endpoint:
    """Where the served model is and how patiently to ask it."""

    url: str                        # the server's base URL (``http://host:port/v1``) or its chat completions URL
    model: str                      # the model name the server serves
    api_key_env: str | None = None  # name of the environment variable holding the API key
    timeout: float = 120.0          # seconds for one answer
    retries: int = 3                # further attempts after a retryable failure
    backoff: float = 0.5            # seconds before the first retry; doubled each time

    @property
    def base_url(self) -> str:
        return base_url(self.url)


def base_url(url: str) -> str:
    """The API base (``.../v1``) of a server URL given as ``http://host:port``, ``.../v1`` or ``.../v1/chat/completions``."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BehavioError(f"--endpoint {url}: expected an http:// or https:// URL such as http://127.0.0.1:8000/v1")
    if parts.username or parts.password:
        raise BehavioError("--endpoint: the URL holds credentials; put the key in an environment variable "
                           "and name it with --api-key-env")
    path = parts.path.rstrip("/").removesuffix("/chat/completions") or "/v1"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def read_api_key(env_name: str | None) -> str | None:
    """The API key held by the environment variable ``env_name`` (None: no key is sent)."""
    if env_name is None:
        return None
    if not _ENV_NAME.match(env_name):
        raise BehavioError("--api-key-env takes the NAME of an environment variable that holds the key "
                           "(e.g. --api-key-env OPENAI_API_KEY), not the key itself")
    key = os.environ.get(env_name, "")
    if not key.strip():
        raise BehavioError(f"--api-key-env {env_name}: the environment variable {env_name} is not set or empty")
    return key.strip()


class _Retryable(Exception):
    """A failure worth another attempt; ``wait`` is the server's Retry-After, if it gave one."""

    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.wait = wait


class _HTTPFailure(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class ChatClient:
    """Sends chat completion requests to one endpoint; safe to share between threads."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.base = endpoint.base_url
        self._key = read_api_key(endpoint.api_key_env)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            self._headers["Authorization"] = f"Bearer {self._key}"
        self._reached = False  # set once the server has answered anything

    # ------------------------------------------------------------------ public

    def served_models(self) -> list[str] | None:
        """The model ids ``GET /models`` lists, or None when the server does not list its models."""
        try:
            reply = self._call("GET", "/models")
        except _HTTPFailure as exc:
            if exc.status in (401, 403):
                raise self._error(exc) from None
            return None
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, list):
            return None
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]

    def complete(self, messages: list[dict], max_tokens: int) -> Generation:
        """The greedy answer to ``messages`` (at most ``max_tokens`` tokens)."""
        body = {"model": self.endpoint.model, "messages": messages, "temperature": 0, "max_tokens": max_tokens,
                "stream": False}
        try:
            reply = self._call("POST", "/chat/completions", body)
        except _HTTPFailure as exc:
            raise self._error(exc) from None
        return self._generation(reply, max_tokens)

    # ------------------------------------------------------------------ one request, retried

    def _call(self, method: str, path: str, body: dict | None = None):
        attempts = 1 + max(0, self.endpoint.retries)
        for attempt in range(attempts):
            try:
                return self._once(method, path, body)
            except _Retryable as exc:
                if attempt + 1 == attempts:
                    raise BehavioError(self._mask(f"{self.base}{path}: {exc} (after {attempts} attempts)")) from None
                delay = exc.wait if exc.wait is not None else self.endpoint.backoff * 2 ** attempt
                time.sleep(min(max(delay, 0.0), MAX_RETRY_AFTER))
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, method: str, path: str, body: dict | None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self.endpoint.timeout) as response:
                raw = response.read()
            self._reached = True
        except urllib.error.HTTPError as exc:
            self._reached = True
            detail = _detail(exc.read(4096))
            if exc.code in RETRIED_STATUS:
                raise _Retryable(f"HTTP {exc.code}: {detail}", _retry_after(exc.headers.get("Retry-After"))) from None
            raise _HTTPFailure(exc.code, detail) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (socket.timeout, TimeoutError)):
                raise _Retryable(f"no answer within {self.endpoint.timeout:g} s (raise --timeout for a slow server)") from None
            if not self._reached:
                raise BehavioError(f"{self.base}{path}: cannot reach the server ({exc.reason}); is it running, "
                                   "and is --endpoint its URL?") from None
            raise _Retryable(f"cannot reach the server any more ({exc.reason})") from None
        except (socket.timeout, TimeoutError):
            raise _Retryable(f"no answer within {self.endpoint.timeout:g} s (raise --timeout for a slow server)") from None
        except (ConnectionError, http.client.HTTPException) as exc:
            raise _Retryable(f"the connection broke ({type(exc).__name__}: {exc})") from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BehavioError(self._mask(f"{self.base}{path}: malformed reply, not JSON: {_excerpt(raw)}")) from None

    # ------------------------------------------------------------------ replies and errors

    def _generation(self, reply, max_tokens: int) -> Generation:
        where = f"{self.base}/chat/completions"
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise BehavioError(self._mask(f"{where}: malformed reply, no choices: {_excerpt(json.dumps(reply))}"))
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(message, dict) or not isinstance(content, (str, type(None))):
            raise BehavioError(self._mask(f"{where}: malformed reply, no message text: {_excerpt(json.dumps(reply))}"))
        reason = choices[0].get("finish_reason")
        if reason is None:  # a server that does not say why it stopped: judge by the tokens it reports
            used = (reply.get("usage") or {}).get("completion_tokens")
            finished = not (isinstance(used, int) and used >= max_tokens)
        else:
            finished = reason != "length"
        return Generation((content or "").strip(), finished)

    def _error(self, exc: _HTTPFailure) -> BehavioError:
        where, model = f"{self.base}/chat/completions", self.endpoint.model
        if exc.status in (401, 403):
            hint = ("; pass the key's environment variable with --api-key-env NAME" if self._key is None
                    else f"; check the key in ${self.endpoint.api_key_env}")
            return BehavioError(self._mask(f"{where}: the server refused the request ({exc}){hint}"))
        served = self._served_quietly() if exc.status in (400, 404, 422) else []
        if served and model not in served:
            return BehavioError(self._mask(f"{where}: model {model!r} is not one the server serves ({exc}); "
                                           f"it serves: {', '.join(served[:10])}"))
        if exc.status == 404:
            return BehavioError(self._mask(f"{where}: {exc}; is --endpoint the API base (such as "
                                           "http://127.0.0.1:8000/v1) and --model a name the server serves?"))
        return BehavioError(self._mask(f"{where}: {exc}"))

    def _served_quietly(self) -> list[str]:
        try:
            return self.served_models() or []
        except BehavioError:
            return []

    def _mask(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def _detail(raw: bytes) -> str:
    """The message of an error reply: OpenAI's ``error.message``, FastAPI's ``detail``, or the text."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _excerpt(raw)
    if isinstance(data, dict):
        error = data.get("error")
        for found in (error.get("message") if isinstance(error, dict) else error, data.get("detail"), data.get("message")):
            if found:
                return _excerpt(found if isinstance(found, str) else json.dumps(found))
    return _excerpt(json.dumps(data))


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _excerpt(text, limit: int = 300) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."
