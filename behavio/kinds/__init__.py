"""Behavior kinds: one module per kind (``behavio/kinds/<kind>.py``), found through one registry.

Everything about a kind -- its spec keys, where it applies, what it does to training answers, its
check rules and scorer, its DPO violations, how on-policy answers are judged -- lives in its
module (see :class:`behavio.kinds.base.Kind`). Nothing else in behavio compares kind names.

Built-in kinds are listed in ``BUILTIN``; other packages add kinds through the ``behavio.kinds``
entry point group, whose entries load a :class:`Kind` instance or subclass (docs/kinds.md)::

    [project.entry-points."behavio.kinds"]
    shout = "my_package.shout:KIND"

A scorer is ``kind.score(response, args, case, finished) -> RuleResult``; :func:`score_rule` calls
one by name.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from functools import lru_cache

from behavio.errors import BehavioError
from behavio.kinds.base import DpoContext, Kind, RowProblem, RuleResult

__all__ = ["Kind", "RuleResult", "RowProblem", "DpoContext", "BUILTIN", "ENTRY_POINT_GROUP", "all_kinds", "get",
           "of", "names", "score_rule", "reload"]

BUILTIN = ("refusal", "prefix", "sign_off", "header", "structure", "list", "length", "json", "style", "no_repetition",
           "on_topic", "contains", "not_contains", "regex", "starts_with", "ends_with", "max_words")
ENTRY_POINT_GROUP = "behavio.kinds"
_MODULES = {"list": "lists", "json": "json_answer"}  # modules named like a builtin or stdlib module would confuse


@lru_cache(maxsize=1)
def all_kinds() -> dict[str, Kind]:
    """Every registered kind by name: the built-ins in their documented order, then plugins by name."""
    found: dict[str, Kind] = {}
    for name in BUILTIN:
        found[name] = importlib.import_module(f"behavio.kinds.{_MODULES.get(name, name)}").KIND
    for entry in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        kind = _load_plugin(entry)
        if kind.name in found:
            raise BehavioError(f"behavior kind {kind.name!r} from entry point {entry.value!r} is already defined")
        found[kind.name] = kind
    return found


def _load_plugin(entry) -> Kind:
    try:
        loaded = entry.load()
    except Exception as exc:  # a broken plugin must not read as a behavio crash
        raise BehavioError(f"behavior kind plugin {entry.name!r} ({entry.value}) does not load: "
                           f"{type(exc).__name__}: {exc}") from None
    kind = loaded() if isinstance(loaded, type) else loaded
    if not isinstance(kind, Kind) or not kind.name:
        raise BehavioError(f"behavior kind plugin {entry.name!r} ({entry.value}) is not a named behavio.kinds.Kind")
    if kind.name != entry.name:
        raise BehavioError(f"behavior kind plugin {entry.name!r} ({entry.value}) is named {kind.name!r}; "
                           "the entry point name must equal Kind.name")
    return kind


def reload() -> dict[str, Kind]:
    """Forget the registry (after installing a plugin in this process) and build it again."""
    all_kinds.cache_clear()
    from behavio.spec import schema

    schema.spec_schema.cache_clear()
    return all_kinds()


def names() -> list[str]:
    return list(all_kinds())


def get(name: str) -> Kind:
    """The kind called ``name``; BehavioError naming the known ones otherwise."""
    kinds = all_kinds()
    if name not in kinds:
        raise BehavioError(f"unknown behavior kind {name!r}; known: {', '.join(kinds)}")
    return kinds[name]


def of(behavior) -> Kind:
    """The kind of a spec behavior."""
    return get(behavior.kind)


def score_rule(kind: str, response: str, args: dict, case=None, finished: bool = True) -> RuleResult:
    """Score ``response`` with the rule of kind ``kind``; KeyError naming the known kinds if unknown.

    ``case`` is a :class:`behavio.check.cases.CheckCase` or a check case mapping (``messages``...).
    """
    from behavio.check.cases import CheckCase

    kinds = all_kinds()
    if kind not in kinds:
        raise KeyError(f"unknown rule kind {kind!r}; known: {', '.join(sorted(kinds))}")
    return kinds[kind].score(response, args, CheckCase.coerce(case), finished)
