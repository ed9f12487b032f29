"""Merge a run's checkpoint into its base model and save the result as a standalone model.

The adapter is merged into fp32 weights (on CPU, whatever the run trained in), then cast to the
export dtype and saved as safetensors with the tokenizer, the chat template and a generation
config that stops on the model's stop tokens. A model card and, optionally, a GGUF file go beside it.
The output is written into a temporary folder next to ``out`` and renamed into place at the end.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from behavio.errors import BehavioError

DTYPES = ("bf16", "fp16", "fp32")


@dataclass
class Export:
    """What ``behavio export`` wrote."""

    out: Path
    checkpoint: Path
    base_model: Path
    dtype: str
    gguf: Path | None = None
    gguf_max_logit_diff: float | None = None


def pick_checkpoint(run_dir: Path, which: str) -> Path:
    """``best`` (the run's ``best`` file, written by the check), a step number, or a checkpoint's name (``139-x0.8``
    or ``checkpoint-139-x0.8``: a weaker copy, train.strengths); it must be complete."""
    from behavio.rundir import inspect_checkpoint, is_checkpoint_name

    if which == "best":
        best = run_dir / "best"
        if not best.is_file():
            raise BehavioError(f"{best}: missing; score the run first (behavio check SPEC --all-checkpoints {run_dir}) "
                               "or pass --checkpoint STEP")
        path = run_dir / best.read_text().strip()
    elif is_checkpoint_name(name := which if which.startswith("checkpoint-") else f"checkpoint-{which}"):
        path = run_dir / name
    else:
        raise BehavioError(f"--checkpoint {which!r}: expected best, a step number or a checkpoint's name")
    if not path.is_dir():
        raise BehavioError(f"{path}: no such checkpoint")
    checkpoint = inspect_checkpoint(path)
    if checkpoint.broken:
        raise BehavioError(f"{path} cannot be exported: {checkpoint.problem}")
    return path


def merged_model(base_path: Path, adapter: Path, *, trust_remote_code: bool = False):
    """The base model with the adapter merged into its fp32 weights (on CPU)."""
    from peft import PeftModel

    from behavio.models import load_model

    base = load_model(base_path, quantization="none", dtype="float32", device="cpu", trust_remote_code=trust_remote_code)
    try:
        peft_model = PeftModel.from_pretrained(base, str(adapter), is_trainable=False)
    except Exception as exc:
        raise BehavioError(f"{adapter}: adapter does not load on {base_path} ({type(exc).__name__}: {exc})") from None
    return peft_model.merge_and_unload().eval()


def export_run(run_dir: str | Path, out: str | Path, *, checkpoint: str = "best", dtype: str = "bf16",
               gguf: bool = False, say: Callable[[str], None] = lambda _: None) -> Export:
    """Write the merged model of ``run_dir``'s checkpoint into ``out`` (a new or empty folder)."""
    import torch

    from behavio.rundir import read_json, run_base_model
    from behavio.export import card
    from behavio.generate import stop_token_ids
    from behavio.models import load_tokenizer, resolve_model

    run_dir, out = Path(run_dir), Path(out)
    if dtype not in DTYPES:
        raise BehavioError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if not run_dir.is_dir():
        raise BehavioError(f"{run_dir}: no such run directory")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BehavioError(f"{out}: exists and is not an empty folder; export into a new one")
    ckpt = pick_checkpoint(run_dir, checkpoint)
    config = read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else {}
    base_name = run_base_model(run_dir, [])
    if not base_name:
        raise BehavioError(f"{run_dir / 'config.json'}: no \"base_model\"; this is not a behavio run directory")
    base_path = resolve_model(base_name)
    trust = bool(config.get("trust_remote_code", False))

    say(f"export: merging {ckpt.name} into {base_path} (fp32), saving as {dtype}")
    model = merged_model(base_path, ckpt, trust_remote_code=trust)
    tokenizer = load_tokenizer(base_path, trust_remote_code=trust)
    model.generation_config.eos_token_id = stop_token_ids(tokenizer, model)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to({"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype])

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        result = Export(out, ckpt, base_path, dtype)
        if gguf:
            from behavio.export import to_gguf

            name = f"{out.name}-{dtype}.gguf"
            say(f"export: writing {name}")
            to_gguf.write_gguf(tmp, tmp / name, dtype)
            result.gguf_max_logit_diff = to_gguf.verify(tmp, tmp / name)
            result.gguf = out / name
        card.write_card(tmp, run_dir, ckpt, base_name, dtype, result.gguf.name if result.gguf else None,
                        result.gguf_max_logit_diff)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result
