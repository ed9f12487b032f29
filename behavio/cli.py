"""The `behavio` command line. Each command is a thin wrapper; user errors exit 2 without a traceback."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from behavio import __version__
from behavio.errors import BehavioError, SpecError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="behavio: compile behavior specs into chat datasets and check suites, train, and check.")
out = Console()
err = Console(stderr=True)


def user_errors(fn):
    """Print BehavioError as plain lines on stderr and exit 2; never a traceback for user mistakes."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BehavioError as exc:
            for line in str(exc).splitlines():
                err.print(line, markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted", markup=False)
            raise typer.Exit(130) from None

    return wrapper


def spec_files(paths: list[Path]) -> list[Path]:
    """Spec files named directly or found (*.yaml, *.yml) in the given folders, sorted."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml") and q.is_file())
        elif p.exists():
            found.append(p)
        else:
            raise BehavioError(f"{p}: no such file or folder")
    if not found:
        raise BehavioError(f"no spec files (*.yaml) in {', '.join(map(str, paths))}")
    return found


@app.command("compile")
@user_errors
def compile_cmd(
    paths: List[Path] = typer.Argument(..., help="Spec files or folders of specs."),
    out_dir: Path = typer.Option(Path("generated"), "--out", "-o", help="Output root; each spec goes to OUT/<spec>/."),
    fill: bool = typer.Option(False, "--fill", help="Also fill model-written answers with the base model (writes OUT/<spec>/filled/)."),
    base_model: str = typer.Option("default", "--base-model", help="Model that fills pending answers (with --fill)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only print errors."),
):
    """Compile specs into generated/<spec>/: sft, dpo, checks, pytest suite, manifest."""
    from behavio.compiler.build import compile_spec
    from behavio.compiler.output import write_compiled

    failed: list[str] = []
    table = Table("spec", "sft", "val", "dpo", "checks", "probes", "pending", "output", title="behavio compile")
    for path in spec_files(paths):
        try:
            compiled = compile_spec(path)
        except SpecError as exc:
            failed += [str(i) for i in exc.issues]
            continue
        for warning in compiled.warnings:
            err.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
        target, changed = write_compiled(compiled, out_dir)
        if fill:
            from behavio.fill import fill_compiled_dir

            fill_compiled_dir(target, base_model)
        c = compiled.manifest["counts"]
        probes = compiled.manifest["composition"]
        n_probe = sum(v["probe"]["rows"] for v in probes["prompt_sets"].values())
        table.add_row(compiled.spec.id, str(c["sft"]), str(c["sft_val"]), str(c["dpo"]), str(c["checks"] - n_probe),
                      str(n_probe), str(c["pending"]), "written" if changed else "unchanged")
    if not quiet and table.row_count:
        out.print(table)
    if failed:
        raise BehavioError("\n".join(failed))


@app.command()
@user_errors
def validate(paths: List[Path] = typer.Argument(..., help="Spec files or folders of specs.")):
    """Check specs for errors without writing anything."""
    from behavio.compiler.build import compile_spec

    failed: list[str] = []
    files = spec_files(paths)
    for path in files:
        try:
            compiled = compile_spec(path)
            for warning in compiled.warnings:
                err.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
        except SpecError as exc:
            failed += [str(i) for i in exc.issues]
    if failed:
        raise BehavioError("\n".join(failed))
    out.print(f"{len(files)} spec(s) valid", highlight=False)


@app.command()
@user_errors
def schema(markdown: bool = typer.Option(False, "--markdown", help="Print the spec reference (docs/spec.md) instead.")):
    """Print the spec's JSON Schema (point editors at it: # yaml-language-server: $schema=...)."""
    if markdown:
        from behavio.spec.reference import reference_markdown

        sys.stdout.write(reference_markdown())
        return
    from behavio.spec.load import spec_schema

    sys.stdout.write(json.dumps(spec_schema(), indent=2) + "\n")


@app.command()
@user_errors
def init(
    name: str = typer.Argument(..., help="Spec id (lowercase letters, digits, - and _)."),
    directory: Path = typer.Option(Path("specs"), "--dir", help="Folder to write NAME.yaml into."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
):
    """Write a commented starter spec that compiles."""
    from behavio.starter import write_starter

    path = write_starter(name, directory, force=force)
    out.print(f"wrote {path}; next: behavio compile {path}", highlight=False)


@app.command()
def version():
    """Print behavio's version."""
    out.print(__version__)


def main() -> None:
    app()
