"""The built wheel carries every file behavio reads at run time, and the installed libraries are the
tested ones. (.ci/run installs the wheel into a fresh venv and runs the commands from a temp dir.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """A wheel built from a copy of the source (the checkout stays free of build/ and egg-info)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "behavio", src / "behavio", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out),
                    str(src)], check=True, capture_output=True)
    return zipfile.ZipFile(next(out.glob("behavio-*.whl")))


def test_the_wheel_holds_every_file_of_the_package(wheel):
    """Templates, frame libraries, chat templates and the schema: nothing is read from outside the package."""
    in_wheel = set(wheel.namelist())
    package = [p.relative_to(ROOT).as_posix() for p in (ROOT / "behavio").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]
    missing = sorted(p for p in package if p not in in_wheel)
    assert not missing, f"not in the wheel: {missing}"
    for needed in ("behavio/spec/schema.json", "behavio/spec/schema_base.json", "behavio/templates/test_suite.py.j2", "behavio/templates/frames/pets.txt",
                   "behavio/templates/chat/chatml.jinja", "behavio/templates/scorecard.html.j2"):
        assert needed in in_wheel
    entry_points = next(n for n in in_wheel if n.endswith("entry_points.txt"))
    assert "behavio = behavio.cli:app" in wheel.read(entry_points).decode()


def test_nothing_at_run_time_reads_outside_the_package():
    from behavio.paths import PACKAGE_DIR, schema_path, templates_dir

    assert templates_dir().is_relative_to(PACKAGE_DIR) and templates_dir().is_dir()
    assert schema_path().is_relative_to(PACKAGE_DIR) and schema_path().is_file()
    assert not (ROOT / "templates").exists()


def test_installed_libraries_are_in_the_pinned_range():
    """pyproject pins transformers, TRL, PEFT, bitsandbytes, accelerate and gguf to the tested minor versions."""
    import importlib.metadata

    from packaging.requirements import Requirement

    requirements = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    pinned = {r.name: r for r in requirements if any(s.operator == "<" for s in r.specifier)}
    assert {"transformers", "trl", "peft", "bitsandbytes", "accelerate", "gguf"} <= set(pinned)
    for name, requirement in pinned.items():
        version = importlib.metadata.version(name)
        assert requirement.specifier.contains(version, prereleases=True), f"{name} {version} is not {requirement}"
