"""Check cases: held-out prompts with the rules their answers must satisfy."""

from __future__ import annotations

from behavio.compiler.compose import Example
from behavio.spec.model import ASSERTION_KINDS, Behavior, Spec


def rules_for(spec: Spec, ex: Example) -> list[dict]:
    """The rules (behavior, kind, args) an answer to ``ex``'s prompt must pass."""
    rules = []
    s = ex.row.set
    for b in spec.behaviors:
        if b.kind == "refusal":
            if ex.refused_by == b.id:
                rules.append(_rule(b, "refusal", expect="refuse", **_refusal_args(b, ex)))
            elif s in b.sets("contrast") and ex.refused_by is None:
                rules.append(_rule(b, "refusal", expect="answer", **_refusal_args(b, ex)))
        elif b.kind == "prefix" and b.id in ex.choices:
            expect = "absent" if ex.refused_by is not None else "present"
            rules.append(_rule(b, "prefix", expect=expect, choices=ex.choices[b.id]))
        elif s not in spec.scope(b):
            continue
        elif b.kind == "structure":
            rules.append(_rule(b, "structure", sections=b.get("sections") or [], code=b.get("code"), json_schema=b.get("json_schema")))
        elif b.kind == "no_repetition":
            rules.append(_rule(b, "no_repetition", ngram=b.get("ngram", 4), max_ngram_repeats=b.get("max_ngram_repeats", 3),
                               min_distinct_2=b.get("min_distinct_2", 0.3)))
        elif b.kind == "on_topic" and ex.refused_by is None:
            rules.append(_rule(b, "on_topic", **({"threshold": b.get("threshold")} if b.get("threshold") is not None else {})))
        elif b.kind in ASSERTION_KINDS:
            args = {k: b.get(k) for k in ("ignore_case", "limit") if b.get(k) is not None}
            args.update(ex.assertions.get(b.id, {}))
            rules.append(_rule(b, b.kind, **args))
    return rules


def _refusal_args(b: Behavior, ex: Example) -> dict:
    args = {"responses": ex.refusals[b.id], "paraphrase": bool(b.get("paraphrase", False))}
    if b.get("threshold") is not None:
        args["threshold"] = b.get("threshold")
    return args


def _rule(b: Behavior, kind: str, **args) -> dict:
    return {"behavior": b.id, "kind": kind, "args": args}


def check_case(spec: Spec, ex: Example, split: str) -> dict:
    """One checks.jsonl row."""
    prefix = "probe" if split == "probe" else "check"
    return {
        "id": f"{prefix}/{ex.id}",
        "split": split,
        "prompt_set": ex.row.set,
        "messages": ex.prompt,
        "rules": rules_for(spec, ex),
        "reference": ex.answer or None,
    }
