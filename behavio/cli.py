"""The `behavio` command line: options and help only; every body is in behavio/commands.py. User errors exit 2
without a traceback."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from behavio.process_settings import set_up_process

set_up_process()  # before torch is imported: sleeping OpenMP waits, glibc reuses freed memory

from behavio import __version__  # noqa: E402
from behavio import commands  # noqa: E402
from behavio.errors import BehavioError  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="behavio: compile behavior specs into chat datasets and check suites, train, and check.")
out = Console()
err = Console(stderr=True)
STRICT_HELP = "Warnings are errors (exit 2), for CI; a spec accepts some by name with ignore_warnings."


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


@app.command("compile")
@user_errors
def compile_cmd(
    paths: List[Path] = typer.Argument(..., help="Spec files or folders of specs."),
    out_dir: Path = typer.Option(Path("generated"), "--out", "-o", help="Output root; each spec goes to OUT/<spec>/."),
    fill: bool = typer.Option(False, "--fill", help="Also fill model-written answers with the base model (writes OUT/<spec>/filled/)."),
    base_model: str = typer.Option("default", "--base-model", help="Model that fills pending answers (with --fill)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No table: only errors and warnings."),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP + " A spec with warnings is not written."),
):
    """Compile specs into generated/<spec>/: sft, dpo, checks, pytest suite, manifest."""
    raise typer.Exit(commands.compile_command(paths, out_dir=out_dir, fill=fill, base_model=base_model, quiet=quiet,
                                              out=out, err=err, strict=strict))


@app.command()
@user_errors
def validate(paths: List[Path] = typer.Argument(..., help="Spec files or folders of specs."),
             strict: bool = typer.Option(False, "--strict", help=STRICT_HELP)):
    """Check specs for errors without writing anything."""
    raise typer.Exit(commands.validate_command(paths, out=out, err=err, strict=strict))


@app.command()
@user_errors
def schema(markdown: bool = typer.Option(False, "--markdown", help="Print the spec reference (docs/spec.md) instead."),
           rules: bool = typer.Option(False, "--rules", help="Print the behavior kinds reference (docs/rules.md) instead.")):
    """Print the spec's JSON Schema (point editors at it: # yaml-language-server: $schema=...)."""
    raise typer.Exit(commands.schema_command(markdown=markdown, rules=rules))


@app.command()
@user_errors
def frames(library: Optional[str] = typer.Argument(None, help="A frame library; none: list them."),
           subject: Optional[str] = typer.Option(None, "--subject", "-s", help="Put this subject in every frame.")):
    """List the frame libraries, or print one library's frames (with --subject in them, to read it in each)."""
    raise typer.Exit(commands.frames_command(library, subject=subject, out=out))


@app.command()
@user_errors
def init(
    name: str = typer.Argument(..., help="Spec id (lowercase letters, digits, - and _)."),
    directory: Path = typer.Option(Path("specs"), "--dir", help="Folder to write NAME.yaml into."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
):
    """Write a commented starter spec that compiles."""
    raise typer.Exit(commands.init_command(name, directory=directory, force=force, out=out))


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
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Base model for adapters (default: the run's config.json); for a full model, the one `of_base` thresholds are measured on."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML (one test per check case)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the scorecard(s) as JSON."),
    md_out: Optional[Path] = typer.Option(None, "--md", help="Write the scorecard as Markdown (every failing case)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help="Tokens per answer (spec check.max_new_tokens, default 96)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Prompts generated at once (spec check.batch_size, default 32)."),
    quantization: str = typer.Option("auto", "--quantization", help="auto (4bit on CUDA, none on CPU), 4bit or none."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu or cuda."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Generate again even when cached answers exist."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow model code from the model directory."),
    failures: int = typer.Option(10, "--failures", help="Failing cases to print (0: none)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress; only the table and errors."),
    tag: Optional[List[str]] = typer.Option(None, "--tag", help="Only the rules tagged TAG (repeat for any of several)."),
    behavior: Optional[List[str]] = typer.Option(None, "--behavior", help="Only this behavior's rules (repeatable)."),
    prompt_set: Optional[List[str]] = typer.Option(None, "--set", help="Only the cases of this prompt set (repeatable)."),
    by_tag: bool = typer.Option(False, "--by-tag", help="Also print the pass rate per tag."),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP + " Missing responses too."),
):
    """Score a model, every checkpoint of a run, a served model (--endpoint), or saved responses against the spec. Exit 0: thresholds met, 1: not, 2: bad input."""
    generation = dict(base_model=base_model, quantization=quantization, device=device, trust_remote_code=trust_remote_code,
                      use_cache=not no_cache, quiet=quiet, max_new_tokens=max_new_tokens, batch_size=batch_size)
    served = dict(endpoint=endpoint, api_key_env=api_key_env, concurrency=concurrency, timeout=timeout)
    raise typer.Exit(commands.check_command(spec, model=model, all_checkpoints=all_checkpoints, responses=responses,
                                            junit=junit, json_out=json_out, md_out=md_out, failures=failures,
                                            generation=generation, served=served, out=out, err=err, tags=tag or [],
                                            behaviors=behavior or [], sets=prompt_set or [], by_tag=by_tag,
                                            strict=strict))


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
    """Fill answers, train LoRA/QLoRA SFT (then DPO when method has it) into runs/<spec>-<time>/, score every checkpoint."""
    raise typer.Exit(commands.train_command(spec, list(overrides or []), base_model=base_model, resume=resume, runs_dir=runs_dir,
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
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP + " A compile warning stops it before training."),
):
    """compile -> train -> check every checkpoint, one command. Exit 0: best meets thresholds, 1: not, 2: error."""
    raise typer.Exit(commands.run_command(spec, list(overrides or []), base_model=base_model, runs_dir=runs_dir, out_dir=out_dir,
                                 quiet=quiet, out=out, err=err, strict=strict))


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
    prompt_set: Optional[str] = typer.Option(None, "--set", help="Only this prompt set's examples (default: one set after another)."),
):
    """Print a few training examples with the trained (loss-bearing) tokens highlighted."""
    raise typer.Exit(commands.preview_command(spec, count=count, stage=stage, base_model=base_model, template=template, fill=fill,
                                     plain=plain, overrides=list(overrides or []), out=out, prompt_set=prompt_set))


@app.command()
@user_errors
def export(
    run_dir: Path = typer.Argument(..., help="Run directory (runs/<spec>-<time>/)."),
    out_dir: Path = typer.Argument(..., help="New folder for the merged model."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best (the run's best file), a step number, or a checkpoint's name (139-x0.8)."),
    dtype: str = typer.Option("bf16", "--dtype", help="bf16, fp16 or fp32 weights."),
    gguf: bool = typer.Option(False, "--gguf", help="Also write a GGUF file (llama/qwen2), checked by loading it back."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors."),
):
    """Merge a checkpoint into its base model: safetensors + tokenizer + chat template + model card (+ GGUF)."""
    from behavio.export.command import export_command

    raise typer.Exit(export_command(run_dir, out_dir, checkpoint=checkpoint, dtype=dtype, gguf=gguf, quiet=quiet,
                                    err=err))


@app.command()
def version():
    """Print behavio's version."""
    out.print(__version__)


def main() -> None:
    app()
