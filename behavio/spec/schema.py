"""The spec's JSON Schema, built from ``schema_base.json`` and the registered behavior kinds.

``schema_base.json`` holds everything but the kinds' own behavior keys. Each kind declares its keys
(``behavio.kinds``); a key several kinds share must have the same type in each. The result is what
specs are validated against at run time (plugin kinds included) and, for the built-in kinds only, the
shipped ``behavio/spec/schema.json`` that editors read (``behavio schema``; a test keeps it fresh).
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources

from behavio import kinds
from behavio.errors import BehavioError

SHIPPED = "schema.json"


@lru_cache(maxsize=1)
def base_schema() -> dict:
    return json.loads(resources.files("behavio.spec").joinpath("schema_base.json").read_text("utf-8"))


@lru_cache(maxsize=1)
def spec_schema() -> dict:
    """The full JSON Schema of a spec with every registered kind (built-ins and plugins)."""
    return build_schema(list(kinds.all_kinds().values()))


def shipped_schema() -> dict:
    """The schema of the built-in kinds only: what ``behavio/spec/schema.json`` holds."""
    return build_schema([kinds.get(name) for name in kinds.BUILTIN])


def build_schema(kind_list: list) -> dict:
    """``schema_base.json`` with the behavior keys and the ``kind`` enum of ``kind_list``."""
    schema = copy.deepcopy(base_schema())
    schema.pop("$comment", None)
    props = schema["properties"]["behaviors"]["items"]["properties"]
    props["kind"] = {"enum": [k.name for k in kind_list], **props["kind"]}
    shared: dict[str, list] = {}
    for kind in kind_list:
        for key, node in kind.keys.items():
            shared.setdefault(key, []).append((kind.name, node))
    for key, owners in shared.items():
        props[key] = _merge(key, owners)
    return schema


def _merge(key: str, owners: list[tuple[str, dict]]) -> dict:
    """One schema entry for ``key``: the kinds that share it must agree on everything but the description."""
    first = {k: v for k, v in owners[0][1].items() if k != "description"}
    for name, node in owners[1:]:
        if {k: v for k, v in node.items() if k != "description"} != first:
            raise BehaviorKeyConflict(f"behavior key {key!r} means different things in kinds "
                                      f"{owners[0][0]!r} and {name!r}; a plugin kind must use its own key names")
    descriptions = list(dict.fromkeys(node.get("description", "") for _, node in owners))
    return {**copy.deepcopy(owners[0][1]), "description": " ".join(d for d in descriptions if d)}


class BehaviorKeyConflict(BehavioError):
    """Two kinds declare the same behavior key with different types."""


def shipped_text() -> str:
    """The text of ``behavio/spec/schema.json``."""
    return json.dumps(shipped_schema(), indent=2, ensure_ascii=False) + "\n"
