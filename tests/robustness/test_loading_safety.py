"""Static guarantees over behavio's own source: nothing loads pickles, unsafe YAML, remote code or unsandboxed Jinja."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "behavio"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            yield node, owner, name


def keyword(node: ast.Call, name: str):
    return next((k.value for k in node.keywords if k.arg == name), None)


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"


def test_sources_found():
    assert len(SOURCES) > 20


def test_no_torch_load_without_weights_only():
    bad = []
    for path in SOURCES:
        for node, owner, name in calls(ast.parse(path.read_text())):
            if owner == "torch" and name == "load":
                value = keyword(node, "weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    bad.append(where(path, node))
    assert not bad, f"torch.load without weights_only=True: {bad}"


def test_no_unsafe_yaml():
    bad = []
    for path in SOURCES:
        for node, owner, name in calls(ast.parse(path.read_text())):
            if owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load", "full_load_all"):
                bad.append(where(path, node))
            if owner == "yaml" and name in ("Loader", "UnsafeLoader", "FullLoader"):
                bad.append(where(path, node))
    assert not bad, f"unsafe YAML loading: {bad}"


def test_trust_remote_code_only_from_the_opt_in_flag():
    bad = []
    for path in SOURCES:
        for node, _, _ in calls(ast.parse(path.read_text())):
            value = keyword(node, "trust_remote_code")
            if isinstance(value, ast.Constant) and value.value is True:
                bad.append(where(path, node))
    assert not bad, f"trust_remote_code=True hard-coded: {bad}"


def test_no_pickle_or_eval():
    bad = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                if any(n in ("pickle", "dill", "marshal", "shelve") for n in names):
                    bad.append(where(path, node))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
                bad.append(where(path, node))
    assert not bad, f"pickle/eval/exec in behavio: {bad}"


def test_only_sandboxed_jinja_environments():
    bad = []
    for path in SOURCES:
        for node, owner, name in calls(ast.parse(path.read_text())):
            direct = isinstance(node.func, ast.Name) or owner == "jinja2"
            if name in ("Environment", "Template", "NativeEnvironment") and direct:
                bad.append(where(path, node))
    assert not bad, f"unsandboxed Jinja environment: {bad}"
