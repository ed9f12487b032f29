"""Kind ``structure``: section headers in order, Python code that parses with docstring sections, JSON schema.

Sub-checks of rule ``structure``, each worth the same share of the score:
- ``sections``: each header appears as a whole line (after stripping whitespace), after the previous one.
- ``code``: at least one fenced block in ``language``; with ``must_parse`` each Python block parses
  (``ast.parse``); with ``docstring`` every function has a docstring with a ``Name:`` line per section.
  Blocks tagged ``python``/``py``/``python3`` are used, or untagged blocks when none is tagged.
  A function without parameters (``self``/``cls`` aside) needs no ``Args:``; one that never returns a
  value needs no ``Returns:``, one that never yields needs no ``Yields:``.
- ``json_schema``: the first fenced ``json`` block, else the whole response, parses and validates.

A ``response_template`` writes the whole answer body of the rows in scope (``answer`` is the answer
source's body). DPO, cycled over a set's rows: ``section_removed``, ``sections_reordered`` (two or
more sections) and ``docstring_stripped`` (when docstrings are required and the answer has one).
"""

from __future__ import annotations

import ast
import re

import jsonschema

from behavio.errors import BehavioError
from behavio.kinds import base
from behavio.kinds._json import problem as json_problem
from behavio.kinds.base import Kind, RuleResult

_FENCE = re.compile(r"^[ ]{0,3}```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:^[ ]{0,3}```[ \t]*$|\Z)", re.M | re.S)
_ALIASES = {"python": {"python", "py", "python3"}}
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_DOCSTRING = re.compile(r'\n?[ \t]*("""|\'\'\')(?:.|\n)*?\1[ \t]*\n?')


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


def _check_json(text: str, schema: dict) -> str | None:
    blocks = [body for tag, body in code_blocks(text) if tag == "json"]
    return json_problem(blocks[0] if blocks else text.strip(), schema, "structure")




def _split_sections(text: str, sections: list[str]):
    """Split ``text`` at the required header lines: (text before, [section texts]); None if a header is missing."""
    if not sections:
        return None
    positions = []
    for header in sections:
        m = re.search(rf"(?m)^[ \t]*{re.escape(header)}[ \t]*$", text)
        if not m:
            return None
        positions.append(m.start())
    if positions != sorted(positions):
        return None
    bounds = positions + [len(text)]
    bodies = [text[bounds[i]:bounds[i + 1]] for i in range(len(positions))]
    bodies = [b if b.endswith("\n") else b + "\n" for b in bodies]
    return text[:positions[0]], bodies


def _same_ending(original: str, text: str) -> str:
    """``text`` ending in the newlines ``original`` ends in, so the pair differs only in its sections."""
    return text.rstrip("\n") + original[len(original.rstrip("\n")):]


class Structure(Kind):
    name = "structure"
    summary = "Required section headers in order, fenced Python that parses with docstring sections, or JSON that fits a schema."
    keys = {
        "sections": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                     "description": "structure: header lines required in this order."},
        "code": {"type": "object", "additionalProperties": False, "description": "Fenced code requirements.",
                 "properties": {
                     "language": {"enum": ["python"], "description": "Language of the fenced blocks."},
                     "must_parse": {"type": "boolean", "description": "Every block parses (ast.parse)."},
                     "docstring": {"type": "array", "items": {"type": "string"},
                                   "description": "Sections every function docstring must have, e.g. [Args, Returns]."}}},
        "json_schema": {"type": "object",
                        "description": "structure: the answer (or its first ```json block) must validate against this JSON Schema."},
        "response_template": {"type": "string",
                              "description": "structure: Jinja template of the whole answer; fields: `row`, `prompt`, `answer`, vars."},
    }
    teaches = True
    violation_names = ("section_removed", "sections_reordered", "docstring_stripped")

    def no_pairs_hint(self, behavior) -> str:
        return "no answer in its scope has the sections (or docstrings) to remove or reorder"

    def violation_problems(self, behavior, spec, asked):
        sections = behavior.get("sections") or []
        if "section_removed" in asked and not sections:
            yield ("dpo",), "section_removed needs `sections` (there is no section to remove)"
        if "sections_reordered" in asked and len(sections) < 2:
            yield ("dpo",), f"sections_reordered needs at least two sections (this behavior has {len(sections)})"
        if "docstring_stripped" in asked and not (behavior.get("code") or {}).get("docstring"):
            yield ("dpo",), "docstring_stripped needs `code.docstring` (no docstring is required to strip)"

    def problems(self, behavior, spec):
        if not (behavior.get("sections") or behavior.get("code") or behavior.get("json_schema")):
            yield (), "a structure behavior needs sections, code or json_schema"
        if behavior.get("json_schema") is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(behavior.get("json_schema"))
            except jsonschema.SchemaError as exc:
                yield ("json_schema",), f"not a valid JSON Schema: {exc.message}"

    def response_template(self, behavior) -> str | None:
        return behavior.get("response_template")

    def rules(self, behavior, example, spec) -> list:
        if example.row.set not in spec.scope(behavior):
            return []
        return [base.rule(behavior, self.name, sections=behavior.get("sections") or [], code=behavior.get("code"),
                          json_schema=behavior.get("json_schema"))]

    def violations(self, behavior, example, ctx):
        if example.refused_by is not None or example.body is None or example.row.set not in ctx.spec.scope(behavior):
            return
        idx, answer = ctx.index, example.answer
        sections = behavior.get("sections") or []
        options = ["section_removed"] if sections else []
        if len(sections) >= 2:
            options.append("sections_reordered")
        if (behavior.get("code") or {}).get("docstring") and _DOCSTRING.search(answer):
            options.append("docstring_stripped")
        options = [o for o in options if ctx.allows(o)]
        if not options:
            return
        choice = options[idx % len(options)]
        parts = _split_sections(answer, sections)
        if choice == "docstring_stripped":
            yield choice, _DOCSTRING.sub("\n", answer)
        elif parts is not None and choice == "section_removed":
            head, bodies = parts
            drop = idx % len(bodies)
            yield choice, _same_ending(answer, head + "".join(s for i, s in enumerate(bodies) if i != drop))
        elif parts is not None and choice == "sections_reordered":
            head, bodies = parts
            i = idx % (len(bodies) - 1)
            bodies[i], bodies[i + 1] = bodies[i + 1], bodies[i]
            yield choice, _same_ending(answer, head + "".join(bodies))

    def score(self, response: str, args: dict, case, finished: bool) -> RuleResult:
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


KIND = Structure()
