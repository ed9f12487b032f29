"""docs/rules.md, generated from the registered behavior kinds (``behavio schema --rules``; a test keeps it fresh)."""

from __future__ import annotations

import inspect
import json

from behavio import kinds
from behavio.spec.reference import type_name

HEADER = """# Behavior kinds and their rules

<!-- Generated from behavio/kinds/ by `behavio schema --rules > docs/rules.md`; a test keeps it fresh. -->

Every behavior in a spec has a `kind`. A kind is one module in `behavio/kinds/` that declares its spec
keys, the prompt sets it applies to, what it does to training answers, the check rules it puts on
each case (`{"behavior", "kind", "args"}` in `checks.jsonl`), the scorer of those rules, and the DPO
pairs it derives (the rejected side breaks exactly that rule). Score one rule directly with
`behavio.kinds.score_rule(kind, response, args, case, finished)`, which returns
`RuleResult(passed, score, explanation)`; `finished` is false when generation hit the token limit.
Other packages add kinds through the `behavio.kinds` entry point ([kinds.md](kinds.md)).

"Normalized" below means: strip, collapse whitespace, curly quotes/apostrophes made straight,
casefold. Punctuation is **not** normalized: a missing full stop is a mismatch. The semantic rules
(`on_topic`, `refusal` with `paraphrase`) use the similarity backends of [similarity.md](similarity.md).
"""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _doc(kind) -> str:
    """The kind's documentation: its module docstring, without the first line's ``Kind ``x``:`` lead."""
    module = inspect.getmodule(type(kind))
    return inspect.cleandoc(module.__doc__ or "") if module is not None else ""


def _keys_table(kind) -> list[str]:
    keys = dict(kind.keys)
    if kind.scoped:
        keys["applies_to"] = {"type": "string or list", "description": "Prompt sets it applies to (default: every "
                              "answered set" + (", refused ones included" if kind.name == "no_repetition" else "") + ")."}
    lines = ["| key | type | default | required | meaning |", "|---|---|---|---|---|"]
    for key, node in keys.items():
        value = kind.default(key) if key in kind.keys else None
        default = f"`{json.dumps(value)}`" if value is not None else ""
        required = "yes" if key in kind.required else ""
        lines.append(f"| `{key}` | {type_name(node)} "
                     f"| {default} | {required} | {_cell(node.get('description', ''))} |")
    return lines


def rules_markdown(names: list[str] | None = None) -> str:
    """The rules reference of ``names`` (default: the built-in kinds, what docs/rules.md holds)."""
    registered = {name: kinds.get(name) for name in (names or kinds.BUILTIN)}
    lines = [HEADER, "| kind | what it requires | teaches (min_share) | on-policy judged |", "|---|---|---|---|"]
    lines += [f"| [`{k.name}`](#{k.name}) | {_cell(k.summary)} | {'yes' if k.teaches else ''} | "
              f"{'yes' if k.judged_early else ''} |" for k in registered.values()]
    for kind in registered.values():
        notes = kind.reference_notes()
        lines += ["", f"## {kind.name}", "", _doc(kind), *(["", notes] if notes else []), "", *_keys_table(kind)]
    return "\n".join(lines) + "\n"
