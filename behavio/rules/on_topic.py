"""Rule ``on_topic``: the response is about the last user message (semantic similarity >= threshold).

Uses all-MiniLM-L6-v2 embeddings (see ``embeddings.py``); without the model, a lexical
content-word cosine with its own default threshold. Defaults were calibrated on literal
question/answer pairs (docs/rules.md): with MiniLM unrelated answers scored <= 0.15 and on-topic
ones >= 0.39; answers about a sibling topic (huskies for beagles) scored 0.31-0.44 and are not
reliably caught.
"""

from __future__ import annotations

from behavio.rules import RuleResult, register
from behavio.rules import embeddings
from behavio.rules._text import excerpt

DEFAULT_THRESHOLD = {"minilm": 0.3, "lexical": 0.1}


def last_user_message(case: dict) -> str:
    """Content of the last ``user`` message of a check case."""
    for message in reversed(case.get("messages") or []):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    raise ValueError(f"on_topic rule: case {case.get('id', '?')!r} has no user message")


@register("on_topic")
def on_topic(response: str, args: dict, case: dict, finished: bool) -> RuleResult:
    """Pass when similarity(prompt, response) >= ``threshold``; score = similarity."""
    prompt = last_user_message(case)
    backend = embeddings.backend_name()
    threshold = args.get("threshold")
    threshold = DEFAULT_THRESHOLD[backend] if threshold is None else float(threshold)
    reason = embeddings.fallback_reason()
    note = f" (lexical fallback: {reason})" if reason else ""
    if not response.strip():
        return RuleResult(False, 0.0, f"empty response to {excerpt(prompt, 50)}{note}")
    sim = embeddings.similarity(prompt, response)
    verdict = "on topic" if sim >= threshold else "off topic"
    return RuleResult(sim >= threshold, sim, f"{verdict}: similarity {sim:.2f} {'>=' if sim >= threshold else '<'} "
                      f"{threshold:.2f} between {excerpt(prompt, 50)} and {excerpt(response, 60)}{note}")
