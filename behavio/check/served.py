"""Check a served model: a spec's check cases answered by an OpenAI-compatible endpoint, cached, scored.

``behavio check SPEC --endpoint URL --model NAME`` lands here. The cases go out a few at a time
(``concurrency``), each answer is cached the moment it arrives -- keyed by the endpoint, the
model name, the token budget and the system-message folding -- so a run that dies halfway keeps
what it got and the next run asks only for the rest. The answers become the same ``Responses``
a local model produces, so scoring, reports and exit codes are those of ``--model``.

The system message goes as :mod:`behavio.check.system_message` decides (folded the way the model
was trained).
"""

from __future__ import annotations

import hashlib
import queue
import sys
import threading
from typing import Callable

from behavio.check.endpoint import ChatClient, Endpoint, base_url, read_api_key
from behavio.check.cases import CheckCase, CheckSpec
from behavio.check.responses import Responses
from behavio.check.scorecard import Scorecard
from behavio.check.system_message import Folding, resolve_folding, spec_fold_system
from behavio.errors import BehavioError
from behavio.generate import GenerationCache
from behavio.models import cache_root

DEFAULT_CONCURRENCY = 4
Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# ---------------------------------------------------------------- answers, cached as they arrive

def answer_cache(endpoint: Endpoint, max_tokens: int, fold: bool, enabled: bool = True) -> GenerationCache:
    """The cache of ``endpoint``'s answers: keyed by URL, model and settings (never by the API key)."""
    identity = hashlib.sha256(f"endpoint|{endpoint.base_url}|{endpoint.model}".encode()).hexdigest()
    settings = {"purpose": "check", "backend": "openai-chat", "max_tokens": max_tokens, "temperature": 0,
                "fold": fold, "v": 1}
    return GenerationCache(cache_root() / "checks", identity, settings, enabled=enabled)


def ask_endpoint(client: ChatClient, items: dict[str, list[dict]], cache: GenerationCache, *, max_tokens: int,
                 concurrency: int = DEFAULT_CONCURRENCY, label: str = "asking", quiet: bool = False) -> int:
    """Answers to ``items`` (key -> conversation as sent) that ``cache`` lacks, cached one by one; returns how
    many were asked. ``concurrency`` workers send the requests; on the first failure they take no new
    case, answers in flight are still cached, and the failure is raised saying how many were kept.
    Workers are daemon threads, so Ctrl-C ends the command at once (their requests die with it)."""
    missing = [k for k in items if cache.get(k) is None]
    if not missing:
        return 0
    todo: queue.Queue = queue.Queue()
    for key in missing:
        todo.put(key)
    done: queue.Queue = queue.Queue()
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                key = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((key, client.complete(items[key], max_tokens), None))
            except Exception as exc:  # reported by the main thread
                done.put((key, None, exc))

    workers = [threading.Thread(target=work, daemon=True, name=f"behavio-endpoint-{i}")
               for i in range(min(max(1, concurrency), len(missing)))]
    progress = _progress(len(missing), label, quiet)
    failure: Exception | None = None
    received = 0
    try:
        for worker in workers:
            worker.start()
        while True:
            try:
                key, generation, error = done.get(timeout=0.2)
            except queue.Empty:
                if any(w.is_alive() for w in workers) or not done.empty():
                    continue
                break
            if error is not None:
                failure = failure or error
                stop.set()
                continue
            cache.put({key: generation})
            received += 1
            if progress:
                progress.advance()
    finally:
        stop.set()
        if progress:
            progress.stop()
    if failure is not None and not isinstance(failure, BehavioError):
        raise failure
    if failure is not None and received and cache.enabled:
        raise BehavioError(f"{failure}\nthe {received} answers that arrived are cached: running again asks only for "
                           f"the other {len(missing) - received}")
    if failure is not None:
        raise failure
    return len(missing)


def endpoint_responses(endpoint: Endpoint, cases: list[CheckCase], *, max_tokens: int, folding: Folding,
                       concurrency: int = DEFAULT_CONCURRENCY, use_cache: bool = True, quiet: bool = False,
                       log: Log = _quiet) -> tuple[Responses, int]:
    """The endpoint's answers to ``cases`` (cached ones reused); returns (responses, answers asked for)."""
    cache = answer_cache(endpoint, max_tokens, folding.fold, use_cache)
    keys = [c.key for c in cases]
    items = {k: folding.messages(c.messages) for k, c in zip(keys, cases)}
    todo = sum(cache.get(k) is None for k in items)
    if todo:
        client = ChatClient(endpoint)
        log(f"{endpoint.model} at {endpoint.base_url}: asking for {todo} of {len(items)} answers "
            f"({concurrency} at a time, at most {max_tokens} tokens each); system message {folding.reason}")
        ask_endpoint(client, items, cache, max_tokens=max_tokens, concurrency=concurrency, quiet=quiet,
                     label=f"{endpoint.model}")
    else:
        log(f"{endpoint.model} at {endpoint.base_url}: all {len(items)} answers cached")
    return Responses.from_generations(cases, [cache.get(k) for k in keys]), todo


def check_endpoint(spec: CheckSpec, endpoint: Endpoint, *, max_new_tokens: int | None = None,
                   concurrency: int = DEFAULT_CONCURRENCY, fold_system: bool | None = None, use_cache: bool = True,
                   quiet: bool = False, log: Log = _quiet) -> Scorecard:
    """Scorecard of the model served at ``endpoint`` on ``spec``'s check cases.

    ``fold_system`` forces folding; None follows the spec, then the model's chat template.
    """
    from behavio.check.scoring import score_cases

    folding = resolve_folding(endpoint.model, spec_fold_system(spec.path) if fold_system is None else fold_system)
    max_tokens = max_new_tokens or spec.max_new_tokens
    responses, asked = endpoint_responses(endpoint, spec.cases, max_tokens=max_tokens, folding=folding,
                                          concurrency=concurrency, use_cache=use_cache, quiet=quiet, log=log)
    meta = {"generated": asked, "endpoint": endpoint.base_url, "model": endpoint.model, "max_new_tokens": max_tokens,
            "fold_system": folding.fold}
    return score_cases(spec.cases, responses, spec.thresholds, label=f"{endpoint.model} at {endpoint.base_url}",
                       meta=meta)


def check_endpoint_options(spec: CheckSpec, *, endpoint: str, model: str | None, api_key_env: str | None, timeout: float,
                           concurrency: int, max_new_tokens: int | None, use_cache: bool, quiet: bool,
                           log: Log) -> Scorecard:
    """``behavio check --endpoint``: validate the options, then :func:`check_endpoint`."""
    if not model:
        raise BehavioError("check --endpoint: give --model, the name the server serves the model under "
                           "(GET /v1/models lists them), and neither --responses nor --all-checkpoints")
    base_url(endpoint), read_api_key(api_key_env)  # bad options fail before any model or server is touched
    target = Endpoint(url=endpoint, model=model, api_key_env=api_key_env, timeout=timeout)
    return check_endpoint(spec, target, max_new_tokens=max_new_tokens, concurrency=concurrency, use_cache=use_cache,
                          quiet=quiet, log=log)


class _Progress:
    """A rich progress bar on stderr (only on a terminal)."""

    def __init__(self, total: int, label: str):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("answers"),
                            TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self.task = self.bar.add_task(label, total=total)
        self.bar.start()

    def advance(self) -> None:
        self.bar.advance(self.task, 1)

    def stop(self) -> None:
        self.bar.stop()


def _progress(total: int, label: str, quiet: bool) -> _Progress | None:
    if quiet or total < 2 or not sys.stderr.isatty():
        return None
    return _Progress(total, label)
