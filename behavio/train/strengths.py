"""Weaker copies of the last checkpoint: more candidates for the check to choose from (``train.strengths``).

A LoRA checkpoint adds ``(lora_alpha / r) x B A`` to each adapted weight. Scaling that update by a factor
``s`` < 1 moves the model back along a straight line towards the base model: weight-space interpolation
between the base and the fine-tuned model (WiSE-FT, Wortsman et al. 2022), which keeps more of what the base
model knew at some cost to the new behavior. Which strength is best depends on the spec and the run, so
behavio does not guess: each strength in ``train.strengths`` becomes one more checkpoint,
``checkpoint-<step>-x<s>/`` (the last checkpoint's weights, its ``lora_alpha`` and ``alpha_pattern`` times
``s``), which the check scores and ranks like any other. ``behavio export`` and serving read the scaled
``lora_alpha`` from its ``adapter_config.json``, so the exported model is the one the scorecard measured.

A copy holds no trainer state: it is never resumed from, and a run's next copies replace it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from behavio.errors import BehavioError
from behavio.rundir import ADAPTER_CONFIG, ADAPTER_WEIGHTS, META, Checkpoint, is_scaled_copy, read_json, write_json

COPIED = (ADAPTER_WEIGHTS, "README.md", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
          "chat_template.jinja", "vocab.json", "merges.txt", "tokenizer.model")  # never the trainer's state


def variant_name(step: int, strength: float) -> str:
    """``checkpoint-139-x0.8`` (fixed-point, never an exponent, so the run directory's name pattern matches it)."""
    return f"checkpoint-{step}-x{f'{strength:.6f}'.rstrip('0').rstrip('.')}"


def weaker_copies(strengths: Sequence[float]) -> list[float]:
    """The strengths that make a copy (1 is the checkpoint itself)."""
    return [s for s in strengths if s != 1]


def scaled_config(config: dict, strength: float) -> dict:
    """A PEFT LoRA config whose every adapted layer's update is ``strength`` times ``config``'s."""
    if config.get("use_dora"):
        raise BehavioError("train.strengths: a DoRA adapter's update is not scaled by lora_alpha alone")
    scaled = dict(config, lora_alpha=config["lora_alpha"] * strength)
    scaled["alpha_pattern"] = {k: v * strength for k, v in (config.get("alpha_pattern") or {}).items()}
    return scaled


def write_variants(run_dir: Path, last: Checkpoint, strengths: Sequence[float],
                   say: Callable[[str], None] = lambda _: None) -> list[Path]:
    """Write ``last`` at each strength (1 is ``last`` itself, skipped) and remove copies of other checkpoints."""
    wanted = {variant_name(last.step, s): s for s in weaker_copies(strengths)}
    for old in run_dir.glob("checkpoint-*"):
        if old.is_dir() and is_scaled_copy(old.name) and old.name not in wanted:
            shutil.rmtree(old)
    written = []
    for name, strength in wanted.items():
        target = run_dir / name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        for file in COPIED:
            if (last.path / file).is_file():
                shutil.copy2(last.path / file, target / file)
        write_json(target / ADAPTER_CONFIG, scaled_config(read_json(last.path / ADAPTER_CONFIG), strength))
        write_json(target / META, {**last.meta, "strength": strength, "scaled_from": last.path.name, "complete": True})
        written.append(target)
    if written:
        say(f"strengths: {', '.join(p.name for p in written)} ({last.path.name}'s update scaled; checked as candidates)")
    return written
