"""JSON answers checked against a JSON Schema (kinds ``json`` and ``structure``)."""

from __future__ import annotations

import json

import jsonschema

from behavio.errors import BehavioError


def validator(schema: dict, kind: str):
    """A validator of ``schema`` (its draft by ``$schema``, else 2020-12); BehavioError if the schema is invalid."""
    try:
        validator_cls = jsonschema.validators.validator_for(schema)
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise BehavioError(f"{kind} rule: invalid json_schema: {exc.message}") from None
    return validator_cls(schema)


def json_path(path) -> str:
    """``$.items[0].name`` for a jsonschema error path."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def problem(source: str, schema: dict, kind: str) -> str | None:
    """None when ``source`` parses as JSON and validates against ``schema``, else why not (one short line)."""
    check = validator(schema, kind)
    try:
        data = json.loads(source)
    except json.JSONDecodeError as exc:
        return f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    error = jsonschema.exceptions.best_match(check.iter_errors(data))
    if error is None:
        return None
    message = error.message if len(error.message) <= 120 else error.message[:119] + "\u2026"
    return f"JSON does not match schema at {json_path(error.absolute_path)}: {message}"
