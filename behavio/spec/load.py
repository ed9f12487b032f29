"""Load a spec file: safe YAML with positions, JSON Schema, cross-references, typed objects.

Every problem is collected (not just the first) and raised together as a SpecError whose
lines read ``file:line:col: key.path: message``.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema

from behavio import kinds
from behavio.errors import BehavioError, SpecError, SpecIssue, did_you_mean
from behavio.paths import missing_file_message
from behavio.spec import yamlpos
from behavio.spec.model import AnswerSource, Behavior, PromptSet, Spec, Split
from behavio.spec.schema import spec_schema
from behavio.spec.warning_names import catalog

_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


def display_path(path: Path) -> str:
    """Path as shown in messages: relative to the working directory when possible."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_spec(path: str | Path) -> Spec:
    """Read and validate the spec at ``path``; raise SpecError listing every problem."""
    path = Path(path)
    shown = display_path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError([SpecIssue(shown, 1, 1, "", f"cannot read spec: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([SpecIssue(shown, 1, 1, "", f"spec is not UTF-8 text (byte {exc.start})")]) from None
    located, issues = yamlpos.load(text, shown)
    if not issues and not isinstance(located.data, dict):
        kind = type(located.data).__name__ if located.data is not None else "empty"
        issues.append(SpecIssue(shown, 1, 1, "", f"a spec must be a mapping with keys spec, prompts, behaviors (got {kind})"))
    if issues:
        raise SpecError(issues)
    issues = schema_issues(located)
    if issues:
        raise SpecError(issues)
    spec = _build(located, path, text)
    issues = _read_probe_files(spec) + reference_issues(spec)
    if issues:
        raise SpecError(issues)
    return spec


def schema_issues(located: yamlpos.Located) -> list[SpecIssue]:
    """Validate against the JSON Schema; one readable issue per violation."""
    validator = jsonschema.Draft202012Validator(spec_schema())
    issues: list[SpecIssue] = []
    for error in validator.iter_errors(located.data):
        issues.extend(_explain(error, located))
    return issues


def _explain(error: jsonschema.ValidationError, located: yamlpos.Located) -> list[SpecIssue]:
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in error.schema.get("properties", {})]
        return [located.issue(path + (k,), f"unknown key {k!r}{did_you_mean(k, allowed)}; allowed: {', '.join(allowed)}", key=True)
                for k in extra]
    if error.validator == "type":
        expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        names = " or ".join(_TYPE_NAMES.get(t, t) for t in expected)
        return [located.issue(path, f"expected {names}, got {_describe(error.instance)}")]
    if error.validator == "enum":
        options = [str(o) for o in error.validator_value]
        got = str(error.instance)
        return [located.issue(path, f"expected one of {', '.join(options)}, got {got!r}{did_you_mean(got, options)}")]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [located.issue(path, f"missing required key {missing!r}")]
    if error.validator == "oneOf":
        checker = jsonschema.Draft202012Validator.TYPE_CHECKER
        typed = [i for i, option in enumerate(error.validator_value)
                 if isinstance(option.get("type"), str) and checker.is_type(error.instance, option["type"])]
        inner = [e for e in error.context if len(typed) == 1 and e.schema_path and e.schema_path[0] == typed[0]]
        if inner:  # the value has the type of one option and breaks it: say how
            return [issue for e in inner for issue in _explain(e, located)]
        return [located.issue(path, f"expected {_expected_from_oneof(error.validator_value)}, got {_describe(error.instance)}")]
    if error.validator == "not" and isinstance(error.instance, dict) and "required" in error.validator_value:
        both = error.validator_value["required"]
        return [located.issue(path, f"give {' or '.join(map(repr, both))}, not both")]
    if error.validator == "pattern":
        return [located.issue(path, f"{error.instance!r} does not match the required form {error.validator_value}")]
    if error.validator in ("minProperties", "maxProperties") and set(error.schema.get("properties", {})) == {"user", "assistant"}:
        got = ", ".join(error.instance) if isinstance(error.instance, dict) and error.instance else "nothing"
        return [located.issue(path, f"a turn is one `user:` or `assistant:`, got {got}")]
    if error.validator == "propertyNames":
        return [located.issue(path, f"bad name: {error.message}")]
    return [located.issue(path, error.message)]


def _expected_from_oneof(options: list[dict]) -> str:
    return " or ".join(_TYPE_NAMES.get(o.get("type", ""), str(o.get("type"))) for o in options)


def _describe(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        short = value if len(value) <= 40 else value[:37] + "..."
        return f"string {short!r}"
    return _TYPE_NAMES.get({dict: "object", list: "array"}.get(type(value), ""), type(value).__name__)



def _build(located: yamlpos.Located, path: Path, text: str) -> Spec:
    data: dict = located.data  # type: ignore[assignment]
    prompts = {}
    for name, body in data["prompts"].items():
        body = dict(body)
        if isinstance(body.get("list"), list):
            body["list"] = tuple(body["list"])
        if "tags" in body:
            body["tags"] = tuple(body["tags"])
        if "conversations" in body:
            body["conversations"] = tuple(_turns(c) for c in body["conversations"])
        if "conversation" in body:
            body["conversation"] = _turns(body["conversation"])
        prompts[name] = PromptSet(name=name, **body)
    answers = {}
    for name, body in (data.get("answers") or {}).items():
        body = dict(body)
        if "items" in body:
            body["items"] = tuple(body["items"])
        answers[name] = AnswerSource(**body)
    behaviors = [Behavior(id=b["id"], kind=b["kind"], index=i, raw=b) for i, b in enumerate(data["behaviors"])]
    return Spec(
        id=data["spec"], path=path, source_text=text, located=located,
        description=data.get("description") or "", system=data.get("system"), vars=data.get("vars") or {},
        prompts=prompts, answers=answers, behaviors=behaviors, probes=dict(data.get("probes") or {}),
        split=Split(**(data.get("split") or {})), thresholds=data.get("thresholds") or {},
        augment=data.get("augment", 1), ignore_warnings=frozenset(data.get("ignore_warnings") or ()),
        tags=tuple(data.get("tags") or ()),
        train=data.get("train") or {}, check=data.get("check") or {},
    )


def _turns(turns: list[dict]) -> tuple:
    """A spec conversation (``[{user: ...}, {assistant: ...}]``) as (role, text) pairs."""
    return tuple(next(iter(turn.items())) for turn in turns)


def turn_problem(roles: list[str]) -> str | None:
    """Why a conversation with these roles cannot be answered (None when it can): user turns alternate with
    assistant turns, from a user turn to the user turn the spec answers."""
    if not roles:
        return "a conversation needs at least one user turn"
    for i, role in enumerate(roles):
        if role != ("user" if i % 2 == 0 else "assistant"):
            return (f"turn {i + 1} is {role}; turns alternate user, assistant, user ... (write `assistant:` with no "
                    "text for an answer the model writes)")
    if roles[-1] != "user":
        return "a conversation ends with the user turn the spec answers"
    return None


_COMMON_KEYS = {"id", "kind", "description", "dpo", "tags"}  # every kind; `applies_to` for scoped kinds


def _violation_issues(loc, where: tuple, b: Behavior, kind, spec: Spec) -> list[SpecIssue]:
    """``dpo: [names]``: every name is a violation the kind derives, and one it can derive for this behavior."""
    asked = b.get("dpo")
    if not isinstance(asked, list):
        return []
    if not kind.violation_names:
        return [loc.issue(where + ("dpo",), f"kind {b.kind} derives no DPO pairs; use dpo: false or leave it out")]
    issues = [loc.issue(where + ("dpo", i), f"unknown violation {name!r} for kind {b.kind}"
                        f"{did_you_mean(name, list(kind.violation_names))}; it derives: {', '.join(kind.violation_names)}")
              for i, name in enumerate(asked) if name not in kind.violation_names]
    return issues + [loc.issue(where + tuple(path), message) for path, message in kind.violation_problems(b, spec, asked)]


def _read_probe_files(spec: Spec) -> list[SpecIssue]:
    """Replace every ``probes.<set>: {file: ...}`` by the prompts it names (a YAML list under ``key``, or rows)."""
    issues = []
    for name, entry in list(spec.probes.items()):
        if isinstance(entry, list):
            continue
        where = ("probes", name, "file")
        target = spec.path.parent / entry["file"]
        if not target.is_file():
            issues.append(spec.located.issue(where, missing_file_message(target, entry["file"])))
            spec.probes[name] = []
            continue
        try:
            spec.probes[name] = _probe_texts(target, entry, name)
        except BehavioError as exc:
            issues.append(spec.located.issue(where, str(exc)))
            spec.probes[name] = []
    return issues


def _yaml_kind(value) -> str:
    """What YAML made of a line that was meant as text: a mapping, a list, a number..."""
    return {dict: "mapping", list: "list", bool: "true/false", type(None): "empty value"}.get(type(value), "number")


def _probe_texts(path: Path, entry: dict, name: str) -> list[str]:
    """The probe prompts of one file: a YAML mapping's list under ``key``, or a JSONL/CSV column."""
    if path.suffix.lower() in (".yaml", ".yml"):
        located, problems = yamlpos.load(path.read_text("utf-8"), path.name)
        if problems:
            raise BehavioError("; ".join(str(p) for p in problems))
        key = entry.get("key", name)
        data = located.data if isinstance(located.data, dict) else {}
        texts = data.get(key)
        if isinstance(texts, list):
            for i, text in enumerate(texts):
                if not isinstance(text, str):
                    line, _ = located.at((key, i))
                    raise BehavioError(f"{path.name}:{line}: item {i + 1} under {key!r} is a {_yaml_kind(text)}, not a "
                                       f"text: quote the line (YAML reads an unquoted `: ` as a key and a value, a "
                                       f"leading `[` or `{{` as a list or mapping, a bare number as a number)")
            return texts
        raise BehavioError(f"{path.name} has no list of strings under {key!r}{did_you_mean(key, list(data))}; "
                           f"keys: {', '.join(map(str, data)) or '(none)'}")
    from behavio.compiler.datafiles import read_file_rows

    column = entry.get("field", "prompt")
    texts = []
    for record in read_file_rows(path):
        if not isinstance(record.fields.get(column), str):
            raise BehavioError(f"{path.name}:{record.line} has no text column {column!r}; columns: {', '.join(record.fields)}")
        texts.append(record.fields[column])
    return texts


def reference_issues(spec: Spec) -> list[SpecIssue]:
    """Cross-reference checks the schema cannot express."""
    loc, issues = spec.located, []
    set_names = sorted(spec.prompts)

    def unknown_set(where: tuple, name: str) -> SpecIssue:
        return loc.issue(where, f"prompt set {name!r} is not defined under prompts{did_you_mean(name, set_names)}")

    for name, ps in spec.prompts.items():
        sources = [k for k in ("list", "template", "file", "frames", "conversations", "conversation")
                   if getattr(ps, k) is not None]
        for per_row in ("template", "conversation"):
            if ps.file and per_row in sources:
                sources.remove(per_row)
        if len(sources) != 1:
            what = "none" if not sources else " and ".join(sources)
            issues.append(loc.issue(("prompts", name), "a prompt set needs exactly one of list, template, file, frames, "
                                    f"conversations, conversation (got {what})"))
        if ps.each is not None and ps.template is None and ps.conversation is None:
            issues.append(loc.issue(("prompts", name, "each"), "`each` needs a `template` or a `conversation` to expand"))
        if ps.conversation is not None and ps.each is None and ps.file is None:
            issues.append(loc.issue(("prompts", name, "conversation"), "`conversation` is a template: give `each` or "
                                    "`file` to expand it (or write `conversations:`, a list of them)"))
        conversations = [(("conversations", i), c) for i, c in enumerate(ps.conversations or ())]
        conversations += [(("conversation",), ps.conversation)] if ps.conversation is not None else []
        for where, turns in conversations:
            if (why := turn_problem([role for role, _ in turns])) is not None:
                issues.append(loc.issue(("prompts", name) + where, why))
        if "judge" in (spec.located.data["prompts"].get(name) or {}) and not (ps.conversations or ps.conversation or ps.file):
            issues.append(loc.issue(("prompts", name, "judge"), "`judge` applies to conversations (`conversations`, "
                                    "`conversation`, or a file of messages)"))
        if ps.file:
            issues.extend(_file_issue(spec, ("prompts", name, "file"), ps.file))
    for name, src in spec.answers.items():
        where = ("answers", name)
        if name not in spec.prompts:
            issues.append(loc.issue(where, f"answers for undefined prompt set {name!r}{did_you_mean(name, set_names)}", key=True))
        needs = {"literal": ("items", "template"), "file": ("path",), "field": (), "model": ()}[src.source]
        if needs and not any(getattr(src, k) is not None for k in needs):
            issues.append(loc.issue(where, f"source {src.source} needs {' or '.join(needs)}"))
        if "on_failure" in (spec.located.data.get("answers") or {}).get(name, {}) and src.source != "model":
            issues.append(loc.issue(where + ("on_failure",), "on_failure applies to source: model (answers compile "
                                    "writes itself are proven at compile time: one that breaks its rule is an error)"))
        if src.source == "file" and src.path:
            issues.extend(_file_issue(spec, where + ("path",), src.path))
        if src.source == "field" and name in spec.prompts and not spec.prompts[name].file:
            issues.append(loc.issue(where + ("source",), f"source field reads a column of the prompt set's file, but prompts.{name} has no file"))
    seen: dict[str, int] = {}
    for b in spec.behaviors:
        where = ("behaviors", b.index)
        if b.id in seen:
            issues.append(loc.issue(where + ("id",), f"duplicate behavior id {b.id!r} (also behaviors[{seen[b.id]}])"))
        seen.setdefault(b.id, b.index)
        kind = kinds.of(b)
        for key in kind.required:
            if key not in b.raw:
                issues.append(loc.issue(where, f"a {b.kind} behavior needs `{key}`"))
        allowed = set(kind.keys) | _COMMON_KEYS | ({"applies_to"} if kind.scoped else set())
        for key in b.raw:
            if key not in allowed:
                issues.append(loc.issue(where + (key,), f"`{key}` does not apply to kind {b.kind}; it takes: {', '.join(sorted(allowed))}", key=True))
        for key in kind.set_keys():
            for i, name in enumerate(b.sets(key)):
                if name not in spec.prompts:
                    sub = where + (key, i) if isinstance(b.raw.get(key), list) else where + (key,)
                    issues.append(unknown_set(sub, name))
        issues += [loc.issue(where + tuple(path), message) for path, message in kind.problems(b, spec)]
        issues += _violation_issues(loc, where, b, kind, spec)
    lines = ["default"] + [line for b in spec.behaviors
                           for line in [b.id] + [f"{b.id}/{part}" for part in kinds.of(b).parts]]
    for key in spec.thresholds:
        if key not in lines:
            issues.append(loc.issue(("thresholds", key), f"no behavior or behavior part named {key!r}"
                                    f"{did_you_mean(key, lines)}; thresholds take: {', '.join(lines)}", key=True))
    for name in spec.probes:
        if name not in spec.prompts:
            issues.append(loc.issue(("probes", name), f"probes for undefined prompt set {name!r}{did_you_mean(name, set_names)}", key=True))
    known = catalog()
    for i, name in enumerate(spec.located.data.get("ignore_warnings") or []):
        if name not in known:
            issues.append(loc.issue(("ignore_warnings", i), f"no warning is named {name!r}{did_you_mean(name, list(known))}; "
                                    f"warnings: {', '.join(known)}"))
    return issues


def _file_issue(spec: Spec, where: tuple, rel: str) -> list[SpecIssue]:
    target = (spec.path.parent / rel)
    if not target.is_file():
        return [spec.located.issue(where, missing_file_message(target, rel))]
    if target.suffix.lower() not in (".jsonl", ".csv"):
        return [spec.located.issue(where, f"unsupported file type {target.suffix!r}: use .jsonl or .csv")]
    return []
