"""Replaying conversations: the assistant turns a check case leaves open are written by the model being checked.

A check case of a conversation set holds the conversation so far; an assistant turn the spec does not give
has ``content: None`` (:mod:`behavio.compiler.compose`). Before the model answers the last user turn, it
writes those turns itself, earliest first, each from the conversation up to it -- a conversation with the
model under check, as a user would have it. :func:`replay` does this in rounds (all first open turns in one
batch, then the next ones), with any ``answer`` function: local generation (:func:`behavio.generate.generate_cached`,
cached like every answer, by the conversation so far) or an endpoint.
"""

from __future__ import annotations

from typing import Callable

from behavio import pending

Messages = list[dict]
Answer = Callable[[dict[str, Messages]], dict[str, str]]  # key -> conversation ending with a user turn => key -> text


def open_turn(messages: Messages) -> int | None:
    """Index of the first assistant turn without content (None when every turn is written)."""
    return next((i for i, m in enumerate(messages) if m.get("role") == "assistant" and m.get("content") is None), None)


def is_open(messages: Messages) -> bool:
    return open_turn(messages) is not None


def replay(items: dict[str, Messages], answer: Answer) -> dict[str, Messages]:
    """``items`` with every open assistant turn written by ``answer``, in rounds; keys and other turns unchanged."""
    out = {key: list(messages) for key, messages in items.items()}
    while True:
        todo: dict[str, Messages] = {}
        for messages in out.values():
            at = open_turn(messages)
            if at is not None:
                todo.setdefault(pending.key_for(messages[:at]), messages[:at])
        if not todo:
            return out
        texts = answer(todo)
        for key, messages in out.items():
            at = open_turn(messages)
            if at is not None:
                written = {**messages[at], "content": texts[pending.key_for(messages[:at])]}
                out[key] = messages[:at] + [written] + messages[at + 1:]
