"""pytest plugin (auto-loaded when behavio is installed): options and fixtures for generated suites.

    pytest generated/<spec>/ --behavio-model PATH_OR_ID
    pytest generated/<spec>/ --behavio-responses answers.jsonl
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("behavio", "behavio generated check suites")
    group.addoption("--behavio-model", default=os.environ.get("BEHAVIO_MODEL"),
                    help="model id/path or adapter dir to generate answers with (env BEHAVIO_MODEL)")
    group.addoption("--behavio-responses", default=os.environ.get("BEHAVIO_RESPONSES"),
                    help="JSONL of {id|prompt, response} to score instead of generating (env BEHAVIO_RESPONSES)")
    group.addoption("--behavio-base-model", default=os.environ.get("BEHAVIO_BASE_MODEL"),
                    help="base model of an adapter dir given as --behavio-model (default: the adapter's own record)")
    group.addoption("--behavio-max-new-tokens", type=int, default=None, help="tokens generated per case")


@pytest.fixture(scope="session")
def behavio_responses(request):
    """``behavio_responses(checks_path)`` -> Responses for that suite (loaded or generated once)."""
    from behavio.check.responses import read_responses
    from behavio.errors import BehavioError
    from behavio.suite_runtime import load_cases

    model = request.config.getoption("--behavio-model")
    responses_file = request.config.getoption("--behavio-responses")
    max_new = request.config.getoption("--behavio-max-new-tokens")
    base_model = request.config.getoption("--behavio-base-model")
    cache: dict[Path, object] = {}

    def get(checks_path: Path):
        if checks_path not in cache:
            cases = load_cases(checks_path)
            try:
                if responses_file:
                    cache[checks_path] = read_responses(responses_file, cases)
                elif model:
                    from behavio.check.engine import responses_from_model

                    cache[checks_path] = responses_from_model(model, cases, max_new_tokens=max_new, base_model=base_model)
                else:
                    pytest.skip("no --behavio-model or --behavio-responses given (or BEHAVIO_MODEL / BEHAVIO_RESPONSES)")
            except BehavioError as exc:
                pytest.fail(f"behavio: {exc}", pytrace=False)
        return cache[checks_path]

    return get
