"""Rule ``structure``: section headers in order, Python code that parses with docstring sections, JSON schema.

Sub-checks, each worth the same share of the score:
- ``sections``: each header appears as a whole line (after stripping whitespace), after the previous one.
- ``code``: at least one fenced block in ``language``; with ``must_parse`` each Python block parses
  (``ast.parse``); with ``docstring`` every function has a docstring with a ``Name:`` line per section.
  Blocks tagged ``python``/``py``/``python3`` are used, or untagged blocks when none is tagged.
  A function without parameters (``self``/``cls`` aside) needs no ``Args:``; one that never returns a
  value needs no ``Returns:``, one that never yields needs no ``Yields:``.
- ``json_schema``: the first fenced ``json`` block, else the whole response, parses and validates.
"""

from __future__ import annotations

import ast
import json
import re

import jsonschema

from behavio.errors import BehavioError
from behavio.rules import RuleResult, register

_FENCE = re.compile(r"^[ ]{0,3}```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:^[ ]{0,3}```[ \t]*$|\Z)", re.M | re.S)
_ALIASES = {"python": {"python", "py", "python3"}}
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, body) of every fenced block; an unterminated last block runs to the end."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]


def blocks_in(text: str, language: str) -> list[str]:
    """Bodies of the fenced blocks tagged ``language`` (or an alias); untagged blocks if none is."""
    names = _ALIASES.get(language, {language})
    blocks = code_blocks(text)
    tagged = [body for tag, body in blocks if tag in names]
    return tagged or [body for tag, body in blocks if not tag]


def check_sections(text: str, sections: list[str]) -> list[str | None]:
    """Per section: None when its heading line appears after the previous section's, else why not."""
    lines = [line.strip() for line in text.splitlines()]
    results, cursor, previous = [], -1, None
    for section in sections:
        where = [i for i, line in enumerate(lines) if line == section.strip()]
        after = [i for i in where if i > cursor]
        if not where:
            results.append(f"missing section {section!r}")
        elif not after:
            results.append(f"section {section!r} out of order (expected after {previous!r})")
        else:
            cursor, previous = after[0], section
            results.append(None)
    return results


def _own_nodes(fn: ast.AST):
    stack = list(fn.body)
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, _SCOPES):
            stack.extend(ast.iter_child_nodes(node))


def _needs(fn: ast.FunctionDef | ast.AsyncFunctionDef, section: str) -> bool:
    if section == "Args":
        a = fn.args
        params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
        params += [p.arg for p in (a.vararg, a.kwarg) if p]
        return bool([p for i, p in enumerate(params) if not (i == 0 and p in ("self", "cls"))])
    if section == "Returns":
        return any(isinstance(n, ast.Return) and n.value is not None
                   and not (isinstance(n.value, ast.Constant) and n.value.value is None) for n in _own_nodes(fn))
    if section == "Yields":
        return any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in _own_nodes(fn))
    return True


def check_docstring(fn: ast.FunctionDef | ast.AsyncFunctionDef, required: list[str]) -> str | None:
    """None when ``fn`` has a docstring with every required section it needs (Args only with
    parameters, Returns only when it returns a value, Yields only when it yields), else why not."""
    doc = ast.get_docstring(fn)
    if doc is None:
        return f"function {fn.name} has no docstring"
    missing = [s for s in required if _needs(fn, s) and not re.search(rf"^\s*{re.escape(s)}:", doc, re.M)]
    return f"function {fn.name} docstring lacks {', '.join(missing)}" if missing else None


def _check_code(text: str, code: dict) -> list[str | None]:
    language = str(code.get("language", "python")).lower()
    must_parse, docstring = bool(code.get("must_parse", False)), list(code.get("docstring") or [])
    if language != "python" and (must_parse or docstring):
        raise BehavioError(f"structure rule: must_parse/docstring support only language 'python', not {language!r}")
    blocks = blocks_in(text, language)
    if not blocks:
        return [f"no {language} code block"]
    results: list[str | None] = [None]
    for n, body in enumerate(blocks, 1):
        try:
            tree = ast.parse(body)
        except SyntaxError as exc:
            if must_parse:
                results.append(f"{language} block {n} SyntaxError at line {exc.lineno}: {exc.msg}")
            elif docstring:
                results.append(f"{language} block {n} does not parse; docstrings not checked")
            continue
        if must_parse:
            results.append(None)
        if docstring:
            fns = [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
            results += [check_docstring(f, docstring) for f in fns]
    return results


def _json_path(path) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _check_json(text: str, schema: dict) -> str | None:
    blocks = [body for tag, body in code_blocks(text) if tag == "json"]
    source = blocks[0] if blocks else text.strip()
    try:
        validator_cls = jsonschema.validators.validator_for(schema)
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise BehavioError(f"structure rule: invalid json_schema: {exc.message}") from None
    try:
        data = json.loads(source)
    except json.JSONDecodeError as exc:
        return f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    error = jsonschema.exceptions.best_match(validator_cls(schema).iter_errors(data))
    if error is None:
        return None
    message = error.message if len(error.message) <= 120 else error.message[:119] + "\u2026"
    return f"JSON does not match schema at {_json_path(error.absolute_path)}: {message}"


@register("structure")
def structure(response: str, args: dict, case: dict, finished: bool) -> RuleResult:
    """Score = share of sub-checks passed; the explanation lists every failure."""
    results: list[str | None] = []
    results += check_sections(response, list(args.get("sections") or []))
    if args.get("code"):
        results += _check_code(response, args["code"])
    if args.get("json_schema") is not None:
        results.append(_check_json(response, args["json_schema"]))
    if not results:
        return RuleResult(True, 1.0, "no structure requirements")
    failures = [r for r in results if r is not None]
    score = (len(results) - len(failures)) / len(results)
    if not failures:
        return RuleResult(True, 1.0, f"all {len(results)} structure checks passed")
    return RuleResult(False, score, f"{len(results) - len(failures)}/{len(results)} structure checks passed: "
                      + "; ".join(failures))
