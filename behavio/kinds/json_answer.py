"""Kind ``json``: the answer is JSON that validates against ``json_schema``.

Rule ``json`` parses the whole answer (stripped) as JSON, or with ``fenced`` its first ```json block (text
around it allowed), and validates it; the explanation names the first error (``invalid JSON at line 1
column 12``, ``JSON does not match schema at $.difficulty: 'hard' is not one of ['easy', 'moderate']``).
Training answers: a ``response_template`` writes them (use the ``tojson`` filter for values, e.g.
``{{ {"trail": row.name, "km": row.km} | tojson }}``); with ``answer_key``, a body that is not JSON yet (the
answer source's, base-model bodies after the fill) becomes ``{"<answer_key>": body}``; with ``fenced`` the
JSON is put in a ```json block. DPO, cycled over a set's rows: ``json_invalid`` (written as a Python literal:
single quotes, True/None; or cut before its last bracket), ``json_missing_key`` (the first required property
of the object left out; needs ``required`` in the schema) and ``json_wrapped`` (bare JSON: behind a
"Here is the JSON:" line; fenced: without its fence).

``structure`` with ``json_schema`` checks the same way (a ```json block first, else the whole answer) but
derives no DPO pairs.
"""

from __future__ import annotations

import json
import re

import jsonschema

from behavio.kinds import base
from behavio.kinds._json import problem
from behavio.kinds._shaping import rotated_rejections
from behavio.kinds.base import Kind, RuleResult

_FENCED = re.compile(r"```[ \t]*json[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S | re.I)
PROSE = "Here is the JSON:\n"


def json_text(text: str, fenced: bool) -> str | None:
    """The JSON part of an answer: the whole of it (stripped), or its first ```json block; None without one."""
    if not fenced:
        return text.strip()
    m = _FENCED.search(text)
    return m.group(1).strip() if m else None


def _parsed(text: str):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None


def _python_literal(data) -> str:
    """``data`` as Python writes it: single quotes, True/False/None (a common way to write invalid JSON)."""
    return repr(data)


class Json(Kind):
    name = "json"
    summary = "The answer is JSON that validates against a JSON Schema."
    keys = {
        "json_schema": {"type": "object",
                        "description": "json: the JSON Schema the answer must validate against."},
        "fenced": {"type": "boolean", "default": False,
                   "description": "json: the JSON is in a ```json block (text around it allowed) instead of the whole answer."},
        "answer_key": {"type": "string", "minLength": 1,
                       "description": "json: a body that is not JSON becomes {\"<answer_key>\": body} (e.g. base-model answers)."},
        "response_template": {"type": "string",
                              "description": "json: the same for the JSON answer (values through the `tojson` filter)."},
    }
    required = ("json_schema",)
    teaches = True
    violation_names = ("json_invalid", "json_missing_key", "json_wrapped")

    def problems(self, behavior, spec):
        schema = behavior.get("json_schema")
        if schema is not None:
            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as exc:
                yield ("json_schema",), f"not a valid JSON Schema: {exc.message}"

    def violation_problems(self, behavior, spec, asked):
        if "json_missing_key" in asked and not (behavior.get("json_schema") or {}).get("required"):
            yield ("dpo",), "json_missing_key needs `required` properties in json_schema (there is none to leave out)"

    def response_template(self, behavior) -> str | None:
        return behavior.get("response_template")

    def shape_body(self, behavior, body: str) -> str:
        """The body as JSON (``answer_key``) and in a ```json block (``fenced``); JSON bodies keep their text."""
        fenced, key = bool(self.arg(behavior, "fenced")), behavior.get("answer_key")
        inner = json_text(body, fenced)
        if inner is not None and _parsed(inner) is not None:
            return body
        text = body.strip()
        if key and _parsed(text) is None:
            text = json.dumps({key: text}, ensure_ascii=False)
        return f"```json\n{text}\n```" if fenced and _parsed(text) is not None else text

    def violate_body(self, behavior, body: str, violation: str) -> str | None:
        fenced = bool(self.arg(behavior, "fenced"))
        inner = json_text(body, fenced)
        data = _parsed(inner) if inner is not None else None
        if data is None:
            return None
        if violation == "json_wrapped":
            return inner if fenced else PROSE + body.strip()
        if violation == "json_invalid":
            broken = _python_literal(data)
            if _parsed(broken) is not None:  # nothing Python writes differently: cut the last bracket
                broken = inner.rstrip()[:-1]
        else:
            required = [k for k in (behavior.get("json_schema") or {}).get("required", []) if isinstance(data, dict) and k in data]
            if not required:
                return None
            broken = json.dumps({k: v for k, v in data.items() if k != required[0]}, ensure_ascii=False)
        return body.replace(inner, broken, 1)

    def rules(self, behavior, example, spec) -> list:
        if example.row.set not in spec.scope(behavior) or example.refused_by is not None:
            return []
        return [base.rule(behavior, self.name, json_schema=behavior.get("json_schema"),
                          fenced=bool(self.arg(behavior, "fenced")))]

    def violations(self, behavior, example, ctx):
        has_required = bool((behavior.get("json_schema") or {}).get("required"))
        yield from rotated_rejections(self, behavior, example, ctx, lambda v: v != "json_missing_key" or has_required)

    def score(self, response: str, args: dict, case, finished: bool) -> RuleResult:
        """Pass when the answer (or its ```json block, ``fenced``) is JSON that validates against ``json_schema``."""
        fenced = bool(args.get("fenced", False))
        source = json_text(response, fenced)
        if source is None:
            return RuleResult(False, 0.0, "expected a ```json block; the answer has none")
        why = problem(source, args.get("json_schema") or {}, self.name)
        if why is None:
            return RuleResult(True, 1.0, "JSON that matches the schema")
        if not fenced and why.startswith("invalid JSON") and _FENCED.search(response):
            why += " (the answer must be JSON alone; `fenced: true` accepts a ```json block)"
        return RuleResult(False, 0.5 if why.startswith("JSON does not match") else 0.0, why)


KIND = Json()
