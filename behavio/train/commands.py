"""The bodies of ``behavio train``, ``behavio run`` and ``behavio preview`` (behavio/cli.py only wires them)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def _say(console: Console, quiet: bool):
    if quiet:
        return lambda _: None
    return lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)


def train_command(spec: Path, overrides: list[str], *, base_model: str | None, resume: Path | None, runs_dir: Path,
                  check: bool, quiet: bool, err: Console) -> int:
    """Train, then score every checkpoint; exit code 0 (the check verdict is printed, not enforced)."""
    from behavio.train.pipeline import train

    result = train(spec, overrides, base_model=base_model, resume=resume, runs_dir=runs_dir, check=check,
                   say=_say(err, quiet), quiet=quiet)
    if result.is_main:
        err.print(f"run directory: {result.run_dir}", markup=False, highlight=False)
    return 0


def run_command(spec: Path, overrides: list[str], *, base_model: str | None, runs_dir: Path, out_dir: Path,
                quiet: bool, out: Console, err: Console) -> int:
    """compile -> train -> check every checkpoint; exit 0 when the best meets every threshold, 1 when not, 2 when broken."""
    from behavio.compiler.build import compile_spec
    from behavio.compiler.output import write_compiled
    from behavio.train.pipeline import train

    say = _say(err, quiet)
    compiled = compile_spec(spec)
    for warning in compiled.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    target, _ = write_compiled(compiled, out_dir)
    say(f"compile: {target} ({compiled.manifest['counts']['sft']} SFT, {compiled.manifest['counts']['dpo']} DPO, "
        f"{compiled.manifest['counts']['checks']} checks)")
    result = train(spec, overrides, base_model=base_model, runs_dir=runs_dir, check=True, say=say, quiet=quiet)
    if not result.is_main or result.report is None:
        return 0
    from behavio.check import report as check_report

    run = result.report
    check_report.wide(out).print(check_report.run_table(run))
    out.print(check_report.best_sentence(run).replace("**", ""), highlight=False)
    out.print(f"run directory: {result.run_dir}", highlight=False)
    return run.exit_code


def preview_command(spec: Path, *, count: int, stage: str, base_model: str | None, template: str | None, fill: bool,
                    plain: bool, overrides: list[str], out: Console) -> int:
    from behavio.preview import build_previews, print_previews

    previews = build_previews(spec, count=count, stage=stage, base_model=base_model, template=template, fill=fill,
                              overrides=overrides)
    print_previews(previews, out, plain=plain)
    return 0
