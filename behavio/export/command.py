"""The body of ``behavio export`` (behavio/cli.py only wires the options)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def export_command(run_dir: Path, out_dir: Path, *, checkpoint: str, dtype: str, gguf: bool, quiet: bool,
                   err: Console) -> int:
    """Export a run's checkpoint as a merged model; exit code 0."""
    from behavio.export.merged import export_run

    def say(line: str) -> None:
        if not quiet:
            err.print(line, markup=False, highlight=False, soft_wrap=True)

    result = export_run(run_dir, out_dir, checkpoint=checkpoint, dtype=dtype, gguf=gguf, say=say)
    say(f"export: wrote {result.out} ({result.checkpoint.name} merged, {result.dtype} safetensors, tokenizer, "
        f"chat template, README.md)")
    if result.gguf is not None:
        say(f"export: {result.gguf.name} loads back with transformers; logits within {result.gguf_max_logit_diff:.1e} "
            "of the safetensors model")
    return 0
