"""Kind ``on_topic``: the answer is about the last user message (semantic similarity >= threshold), and says more
than pleasantries.

An answer whose every sentence is courtesy ("I'm sorry for your loss. I'm here to help with any questions.")
fails without the embeddings: it echoes the question's words often enough to pass a similarity test, and it
answers nothing (:mod:`behavio.kinds._pleasantries`).

Uses all-MiniLM-L6-v2 embeddings (``behavio.embeddings``); without the model, a lexical content-word
cosine with its own default threshold. Defaults were calibrated on literal question/answer pairs
(docs/similarity.md): with MiniLM unrelated answers scored <= 0.15 and on-topic ones >= 0.39; answers
about a sibling topic (huskies for beagles) scored 0.31-0.44 and are not reliably caught.
It applies to answered rows only (a refusal is not about the question), and judges the answer's body: the fixed
sentences the spec's behaviors open or close that row's answers with (a prefix, a sign-off, a header: the rule's
``fixed``) are taken off first, so "Thanks for your billing question." does not lend a billing answer its words,
and "I'm here to help you with your stay." above a sign-off is still courtesy alone. DPO: ``off_topic``, the
answer body of a row of another prompt set, on one row in four.
"""

from __future__ import annotations

from behavio import embeddings
from behavio.kinds import base
from behavio.kinds._pleasantries import non_answer
from behavio.kinds._text import excerpt, without_end_phrases
from behavio.kinds.base import Kind, RuleResult

DEFAULT_THRESHOLD = {"minilm": 0.3, "lexical": 0.1}
GUARD_EVERY = 4  # an off-topic rejection on one row in four


class OnTopic(Kind):
    name = "on_topic"
    summary = ("The answer is about the question (embedding similarity of prompt and answer) and is more than "
               "pleasantries (apologies, offers to help).")
    keys = {"threshold": {"type": "number", "minimum": 0, "maximum": 1,
                          "description": "on_topic / refusal paraphrase: similarity threshold."}}
    violation_names = ("off_topic",)

    def rules(self, behavior, example, spec) -> list:
        if example.row.set not in spec.scope(behavior) or example.refused_by is not None:
            return []
        threshold, fixed = behavior.get("threshold"), example.fixed_sentences(spec)
        return [base.rule(behavior, self.name, **({"threshold": threshold} if threshold is not None else {}),
                          **({"fixed": fixed} if fixed else {}))]

    def violations(self, behavior, example, ctx):
        if example.refused_by is not None or example.body is None or example.row.set not in ctx.spec.scope(behavior):
            return
        if ctx.index % GUARD_EVERY == 2 and ctx.allows("off_topic"):
            donors = ctx.donors(example.row.set)
            if donors:
                yield "off_topic", example.answer.replace(example.body, donors[ctx.index % len(donors)], 1)

    def embedding_texts(self, args, case, response) -> set[str]:
        body = without_end_phrases(response, args.get("fixed", []))
        return set() if not body or non_answer(case.prompt, body) else {case.prompt, body}

    def score(self, response: str, args: dict, case, finished: bool) -> RuleResult:
        """Pass when similarity(prompt, body) >= ``threshold``; score = similarity. The body is the response without
        the ``fixed`` sentences at its ends."""
        if not any(m.get("role") == "user" for m in case.messages):
            raise ValueError(f"on_topic rule: case {case.id!r} has no user message")
        prompt = case.prompt
        backend = embeddings.backend_name()
        threshold = args.get("threshold")
        threshold = DEFAULT_THRESHOLD[backend] if threshold is None else float(threshold)
        reason = embeddings.fallback_reason()
        note = f" (lexical fallback: {reason})" if reason else ""
        if not response.strip():
            return RuleResult(False, 0.0, f"empty response to {excerpt(prompt, 50)}{note}")
        body = without_end_phrases(response, args.get("fixed", []))
        if not body:
            return RuleResult(False, 0.0, f"no answer: {excerpt(response, 60)} is only the spec's fixed sentences, "
                                          f"to {excerpt(prompt, 50)}")
        if non_answer(prompt, body):
            return RuleResult(False, 0.0, f"no answer: every sentence of {excerpt(body, 60)} is a pleasantry "
                                          f"(an apology, an offer to help, a greeting) to {excerpt(prompt, 50)}")
        sim = embeddings.similarity(prompt, body)
        verdict = "on topic" if sim >= threshold else "off topic"
        return RuleResult(sim >= threshold, sim, f"{verdict}: similarity {sim:.2f} {'>=' if sim >= threshold else '<'} "
                          f"{threshold:.2f} between {excerpt(prompt, 50)} and {excerpt(body, 60)}{note}")


KIND = OnTopic()
