"""The `behavio` command line. Each command is a thin wrapper; user errors exit 2 without a traceback."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

# OpenMP threads that spin while waiting make CPU training and generation up to ~50x slower when
# another process shares the cores (measured on 2 cores); every timing in bench/ was taken with
# sleeping waits. Set before torch starts its thread pool; an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from behavio import __version__  # noqa: E402
from behavio.errors import BehavioError, SpecError  # noqa: E402

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
@user_errors
def check(
    spec: Path = typer.Argument(..., help="Spec file; its check cases are compiled in memory (never stale)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model id/path, 'default', or an adapter directory (with --endpoint: the served model's name)."),
    all_checkpoints: Optional[Path] = typer.Option(None, "--all-checkpoints", help="Run directory: check every checkpoint-*/."),
    responses: Optional[Path] = typer.Option(None, "--responses", help="JSONL of {id|prompt, response} to score; no model needed."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="Ask an OpenAI-compatible server instead (e.g. http://127.0.0.1:8000/v1)."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Name of the environment variable holding the endpoint's API key."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Requests in flight at once (with --endpoint)."),
    timeout: float = typer.Option(120.0, "--timeout", min=1, help="Seconds to wait for one answer (with --endpoint)."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Base model for adapters (default: the run's config.json)."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML (one test per check case)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the scorecard(s) as JSON."),
    md_out: Optional[Path] = typer.Option(None, "--md", help="Write the scorecard as Markdown (every failing case)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help="Tokens per answer (spec check.max_new_tokens, default 96)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Prompts generated at once (spec check.batch_size, default 32)."),
    quantization: str = typer.Option("auto", "--quantization", help="auto (4bit on CUDA, none on CPU), 4bit or none."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Generate again even when cached answers exist."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow model code from the model directory."),
    failures: int = typer.Option(10, "--failures", help="Failing cases to print (0: none)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress; only the table and errors."),
):
    """Score a model, every checkpoint of a run, a served model (--endpoint), or saved responses against the spec. Exit 0: thresholds met, 1: not, 2: bad input."""
    from behavio.check import engine, report

    if sum(s is not None for s in (model, all_checkpoints, responses)) != 1:
        raise BehavioError("check: give exactly one of --model, --all-checkpoints, --responses"
                           + (" (with --endpoint: --model, the name the server serves)" if endpoint else ""))
    if api_key_env is not None and endpoint is None:
        raise BehavioError("check: --api-key-env goes with --endpoint")
    cs = engine.load_check_spec(spec)
    gen = dict(base_model=base_model, quantization=quantization, trust_remote_code=trust_remote_code,
               use_cache=not no_cache, quiet=quiet, max_new_tokens=max_new_tokens, batch_size=batch_size)
    if endpoint is not None:
        from behavio.check.served import check_endpoint_options

        log = (lambda m: None) if quiet else (lambda m: err.print(m, markup=False, highlight=False, soft_wrap=True))
        card = check_endpoint_options(cs, endpoint=endpoint, model=model, api_key_env=api_key_env, timeout=timeout,
                                      concurrency=concurrency, max_new_tokens=max_new_tokens, use_cache=not no_cache,
                                      quiet=quiet, log=log)
        cards, data, markdown, code = _one_card(cs, card, failures)
    elif all_checkpoints is not None:
        cards, data, markdown, code = _check_all(cs, all_checkpoints, gen, failures)
    else:
        cards, data, markdown, code = _check_one(cs, model, responses, gen, failures)
    if md_out:
        report.write_text(md_out, markdown)
    if json_out:
        report.write_json(json_out, data)
    if junit:
        report.write_junit(junit, cards, cs.id)
    raise typer.Exit(code)


def _check_all(cs, run_dir: Path, gen: dict, failures: int):
    """Every checkpoint of a run: table, best, run files; broken checkpoints listed on stderr (exit 2)."""
    from behavio.check import engine, report

    log = (lambda m: None) if gen["quiet"] else (lambda m: err.print(m, markup=False, highlight=False))
    run = engine.check_checkpoints(cs, run_dir, log=log, **gen)
    written = report.write_run_outputs(run)
    report.wide(out).print(report.run_table(run))
    out.print(report.best_sentence(run).replace("**", ""), highlight=False)
    if run.best and failures:
        report.print_failures(out, run.best, failures)
    out.print(f"wrote {', '.join(str(p) for p in written)}; generated {run.generated} answers", highlight=False)
    for warning in run.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    for ckpt in run.broken:
        err.print(f"broken checkpoint: {ckpt.problem}", markup=False, highlight=False, soft_wrap=True)
    return run.cards, run.to_dict(), report.run_markdown(run), run.exit_code


def _check_one(cs, model: Optional[str], responses: Optional[Path], gen: dict, failures: int):
    """One model (or adapter dir), or saved responses: table and failing cases."""
    from behavio.check import engine, report

    if responses is not None:
        from behavio.check.responses import read_responses

        card = engine.score_cases(cs.cases, read_responses(responses, cs.cases), cs.thresholds, label=responses.name)
        if card.missing:
            err.print(f"warning: {responses}: no response for {len(card.missing)} of {len(card.cases)} check cases "
                      "(counted as failing)", markup=False, highlight=False, soft_wrap=True)
    else:
        card = engine.check_model(cs, model, **gen)
    return _one_card(cs, card, failures)


def _one_card(cs, card, failures: int):
    """Print one scorecard and its failing cases; the JSON, Markdown and exit code of one model."""
    from behavio.check import report

    report.wide(out).print(report.card_table(card, title=f"behavio check {cs.id}: {card.label}"))
    if failures:
        report.print_failures(out, card, failures)
    data = {"spec": cs.id, "spec_sha256": cs.spec_sha256, "checks_sha256": cs.checks_sha256, "scorecard": card.to_dict()}
    return [card], data, report.card_markdown(card, "#"), 0 if card.meets_thresholds else 1


@app.command()
@user_errors
def train(
    spec: Path = typer.Argument(..., help="Spec file (compiled in memory; its train: block gives the settings)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Training settings as key=value, e.g. lr=5e-5 max_minutes=90."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Model to fine-tune (overrides train.base_model)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Run directory to continue from its newest complete checkpoint."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where new run directories go."),
    no_check: bool = typer.Option(False, "--no-check", help="Do not score the checkpoints after training."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors."),
):
    """Fill answers, train LoRA/QLoRA SFT then DPO into runs/<spec>-<time>/, score every checkpoint."""
    from behavio.train.commands import train_command

    raise typer.Exit(train_command(spec, list(overrides or []), base_model=base_model, resume=resume, runs_dir=runs_dir,
                                   check=not no_check, quiet=quiet, err=err))


@app.command()
@user_errors
def run(
    spec: Path = typer.Argument(..., help="Spec file."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Training settings as key=value."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Model to fine-tune (overrides train.base_model)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where the run directory goes."),
    out_dir: Path = typer.Option(Path("generated"), "--out", "-o", help="Where compile writes generated/<spec>/."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the scorecard and errors."),
):
    """compile -> train -> check every checkpoint, one command. Exit 0: best meets thresholds, 1: not, 2: error."""
    from behavio.train.commands import run_command

    raise typer.Exit(run_command(spec, list(overrides or []), base_model=base_model, runs_dir=runs_dir, out_dir=out_dir,
                                 quiet=quiet, out=out, err=err))


@app.command()
@user_errors
def preview(
    spec: Path = typer.Argument(..., help="Spec file."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Training settings as key=value (max_length, fold_system...)."),
    count: int = typer.Option(3, "--count", "-n", min=1, help="Examples to show."),
    stage: str = typer.Option("sft", "--stage", help="sft, or dpo (chosen and rejected)."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Whose tokenizer and chat template to use."),
    template: Optional[str] = typer.Option(None, "--template", help="Use a shipped chat template: chatml, llama3, mistral, gemma."),
    fill: bool = typer.Option(False, "--fill", help="Write pending answers with the base model instead of a placeholder."),
    plain: bool = typer.Option(False, "--plain", help="Mark trained text with [[...]] instead of colour."),
):
    """Print a few training examples with the trained (loss-bearing) tokens highlighted."""
    from behavio.train.commands import preview_command

    raise typer.Exit(preview_command(spec, count=count, stage=stage, base_model=base_model, template=template, fill=fill,
                                     plain=plain, overrides=list(overrides or []), out=out))


@app.command()
def version():
    """Print behavio's version."""
    out.print(__version__)


def main() -> None:
    app()
