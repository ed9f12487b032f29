"""Render the pytest check suite of a spec from behavio/templates/test_suite.py.j2."""

from __future__ import annotations

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from behavio import __version__
from behavio.paths import templates_dir
from behavio.spec.model import Spec


def suite_filename(spec_id: str) -> str:
    return f"test_{spec_id.replace('-', '_')}.py"


def render_suite(spec: Spec) -> str:
    env = ImmutableSandboxedEnvironment(loader=FileSystemLoader(str(templates_dir())), undefined=StrictUndefined,
                      keep_trailing_newline=True, autoescape=False)
    return env.get_template("test_suite.py.j2").render(
        version=__version__, spec_id=spec.id, spec_file=spec.path.name, description=spec.description,
    )
