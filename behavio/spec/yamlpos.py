"""Safe YAML loading that remembers where every key and value came from.

Plain ``yaml.safe_load`` loses line numbers and silently keeps the last of two
duplicate keys.  We compose the node tree with PyYAML's *safe* loader, then build
the Python data ourselves, recording ``(line, col)`` for every key path and
collecting duplicate keys, foreign tags and alias bombs as issues.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from behavio.errors import SpecIssue

MAX_NODES = 200_000  # expanded nodes, guards against alias ("billion laughs") bombs
MAX_DEPTH = 64
_STANDARD_TAG_PREFIX = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {"str", "int", "float", "bool", "null", "map", "seq", "timestamp", "binary", "merge"}

KeyPath = tuple  # of str | int


@dataclass
class Located:
    """YAML data plus the position of every key path in it."""

    data: object
    file: str
    values: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)

    def at(self, path: KeyPath, *, key: bool = False) -> tuple[int, int]:
        """Position of ``path`` (its key when ``key``), falling back to the nearest ancestor."""
        table = self.keys if key else self.values
        path = tuple(path)
        while path:
            if path in table:
                return table[path]
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), (1, 1))

    def issue(self, path: KeyPath, message: str, *, key: bool = False) -> SpecIssue:
        line, col = self.at(path, key=key)
        return SpecIssue(self.file, line, col, format_path(path), message)


def format_path(path: KeyPath) -> str:
    """``("behaviors", 0, "id")`` -> ``behaviors[0].id``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load(text: str, file: str) -> tuple[Located, list[SpecIssue]]:
    """Parse ``text``; return the located data and every issue found while building it."""
    loc = Located(data=None, file=file)
    issues: list[SpecIssue] = []
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # raised while reading a str: a non-printable character
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        issues.append(SpecIssue(file, line, col, "", f"YAML error: character U+{exc.character:04X} is not allowed in YAML"))
        return loc, issues
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
            issues.append(SpecIssue(file, line, col, "", f"YAML syntax error: {problem}{syntax_hint(text, line, problem)}"))
            return loc, issues
        except yaml.YAMLError as exc:
            issues.append(SpecIssue(file, 1, 1, "", f"YAML error: {exc}"))
            return loc, issues
        except RecursionError:  # PyYAML composes recursively: hundreds of nested [ or { exhaust the stack
            line, col = _deep_position(text)
            issues.append(SpecIssue(file, line, col, "", f"nesting deeper than {MAX_DEPTH} levels"))
            return loc, issues
        if node is None:
            loc.data = None
            return loc, issues
        builder = _Builder(loader, loc, issues)
        loc.data = builder.build(node, ())
    finally:
        loader.dispose()
    return loc, issues


def syntax_hint(text: str, line: int, problem: str) -> str:
    """A likely cause of a YAML syntax error at ``line``: a tab, an indentation off by a space, a colon in a value."""
    lines = text.splitlines()
    near = lines[max(0, line - 2):line] if lines else []
    if any("\t" in item[: len(item) - len(item.lstrip())] for item in near) or "\t" in problem or "tab" in problem:
        return "; hint: indent with spaces, not tabs (YAML forbids tabs in indentation)"
    if "mapping values are not allowed" in problem:
        return ("; hint: a value holding ': ' must be quoted, e.g. \"Note: this\" -- or a key is indented "
                "under a value that is not a mapping")
    widths = {len(item) - len(item.lstrip(" ")) for item in lines if item.strip() and not item.lstrip().startswith("#")}
    if "expected <block end>" in problem or "did not find expected key" in problem or any(w % 2 for w in widths):
        return ("; hint: check the indentation of this line and the one above: keys of one mapping must start in "
                "the same column, list items (-) under their key")
    return ""


def _deep_position(text: str) -> tuple[int, int]:
    """Where flow-style brackets first nest deeper than MAX_DEPTH (1:1 if they never do)."""
    depth, line, col = 0, 1, 0
    for ch in text:
        col += 1
        if ch == "\n":
            line, col = line + 1, 0
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line, col
        elif ch in "]}":
            depth = max(0, depth - 1)
    return 1, 1


class _TooBig(Exception):
    pass


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, loc: Located, issues: list[SpecIssue]):
        self.loader, self.loc, self.issues = loader, loc, issues
        self.count = 0

    def _issue(self, node: yaml.Node, path: KeyPath, message: str) -> None:
        m = node.start_mark
        self.issues.append(SpecIssue(self.loc.file, m.line + 1, m.column + 1, format_path(path), message))

    def build(self, node: yaml.Node, path: KeyPath):
        try:
            return self._build(node, path, 0)
        except _TooBig as exc:
            self._issue(node, (), str(exc))
            return None

    def _build(self, node: yaml.Node, path: KeyPath, depth: int):
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(f"the document expands to more than {MAX_NODES} nodes (alias bomb?)")
        if depth > MAX_DEPTH:
            raise _TooBig(f"nesting deeper than {MAX_DEPTH} levels (recursive alias?)")
        self.loc.values.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if not self._tag_ok(node, path):
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self._build(child, path + (i,), depth + 1) for i, child in enumerate(node.value)]
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self._issue(node, path, f"cannot read value: {getattr(exc, 'problem', exc)}")
            return None

    def _tag_ok(self, node: yaml.Node, path: KeyPath) -> bool:
        tag = node.tag or ""
        if tag.startswith(_STANDARD_TAG_PREFIX) and tag[len(_STANDARD_TAG_PREFIX):] in _ALLOWED_TAGS:
            return True
        self._issue(node, path, f"YAML tag {tag!r} is not allowed in a spec (plain values only)")
        return False

    def _mapping(self, node: yaml.MappingNode, path: KeyPath, depth: int) -> dict:
        try:
            self.loader.flatten_mapping(node)
        except yaml.YAMLError as exc:
            self._issue(node, path, f"bad merge key: {getattr(exc, 'problem', exc)}")
            return {}
        out: dict = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self._issue(key_node, path, "mapping keys must be plain strings")
                continue
            key = self.loader.construct_scalar(key_node)
            if key_node.tag.endswith(":int") or key_node.tag.endswith(":bool") or key_node.tag.endswith(":null"):
                key = str(key)
            if key in out:
                first = self.loc.keys.get(path + (key,), (0, 0))
                self._issue(key_node, path + (key,), f"duplicate key {key!r} (first defined at line {first[0]})")
                continue
            self.loc.keys[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self._build(value_node, path + (key,), depth + 1)
        return out
