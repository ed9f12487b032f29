"""Pending answer bodies: the marker compile writes where the base model must write an answer.

``answers: {source: model}`` bodies are unknown at compile time. Compile writes
``<<behavio:pending:KEY>>`` in their place, KEY a hash of the conversation that asks for them, and
lists KEY -> conversation in ``pending.jsonl``; fill (before training, or ``compile --fill``) replaces
every marker with the base model's greedy answer. This module is the one place that knows the format.
"""

from __future__ import annotations

import hashlib
import json
import re

from behavio.errors import BehavioError

PREFIX = "<<behavio:pending:"
SUFFIX = ">>"
_MARKER = re.compile(re.escape(PREFIX) + r"([0-9a-f]+)" + re.escape(SUFFIX))


def key_for(messages: list[dict]) -> str:
    """The content key of a conversation (also the generation-cache key of checks and fills)."""
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def marker(key: str) -> str:
    return f"{PREFIX}{key}{SUFFIX}"


def keys_in(*texts: str) -> list[str]:
    """The pending keys named in ``texts``, sorted and unique."""
    return sorted({m.group(1) for text in texts for m in _MARKER.finditer(text)})


def has_marker(text: str) -> bool:
    return _MARKER.search(text) is not None


def replace_markers(text: str, replace) -> str:
    """``text`` with every marker replaced by ``replace(key)``."""
    return _MARKER.sub(lambda m: replace(m.group(1)), text)


def fill_value(value, answers: dict[str, str], where: str):
    """``value`` (text, list or mapping, nested) with every marker replaced by its answer."""
    if isinstance(value, str):
        def answer(key: str) -> str:
            if key not in answers:
                raise BehavioError(f"{where}: no answer for pending key {key}")
            return answers[key]

        return replace_markers(value, answer)
    if isinstance(value, list):
        return [fill_value(v, answers, where) for v in value]
    if isinstance(value, dict):
        return {k: fill_value(v, answers, where) for k, v in value.items()}
    return value
