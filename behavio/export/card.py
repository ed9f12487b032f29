"""The model card (README.md) of an exported model: what it was trained to do (the spec), how well the
exported checkpoint does it (its scorecard and the run's plot), and how to load it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from behavio import __version__
from behavio.check.scorecard import SPLITS

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _spec_text(run_dir: Path, config: dict) -> tuple[str | None, str]:
    """The spec's YAML (the run's copy, else its file if unchanged) and where it came from."""
    copy = run_dir / "spec.yaml"
    if copy.is_file():
        return copy.read_text(encoding="utf-8"), "spec.yaml in the run directory"
    name = config.get("spec_file")
    for candidate in ([Path(name), run_dir.parent.parent / name] if name else []):
        if candidate.is_file():
            text = candidate.read_text(encoding="utf-8")
            if hashlib.sha256(text.encode("utf-8")).hexdigest() == config.get("spec_hash"):
                return text, str(candidate)
    return None, f"{name or 'the spec file'} (not found unchanged; spec hash {str(config.get('spec_hash'))[:12]})"


def _base_model_id(name: str) -> str:
    """The base model as a Hugging Face id where there is one (``default`` is SmolLM2-135M-Instruct)."""
    if name == "default":
        return DEFAULT_MODEL_ID
    return Path(name).name if Path(name).is_absolute() else name


def _rate(cell: dict | None) -> str:
    if not cell or not cell.get("total"):
        return "–"
    return f"{cell['rate']:.0%} ({cell['passed']}/{cell['total']})"


def _scorecard_section(run_dir: Path, checkpoint: str) -> str:
    path = run_dir / "scorecard.json"
    if not path.is_file():
        return "This checkpoint was not scored (the run has no scorecard.json).\n"
    data = json.loads(path.read_text(encoding="utf-8"))
    card = next((c for c in data.get("checkpoints", []) if c.get("label") == checkpoint or c.get("checkpoint") == checkpoint),
                None)
    if card is None:
        return f"{checkpoint} is not in the run's scorecard.\n"
    rows = card.get("lines") or card.get("behaviors") or {}
    splits = [s for s in SPLITS if any(s in r for r in rows.values())]
    lines = [f"On the spec's held-out check cases and probes ({data.get('max_new_tokens')} new tokens per answer, "
             f"greedy); {'every threshold met' if card.get('meets_thresholds') else 'not every threshold met'}.", "",
             "| behavior | " + " | ".join(splits) + " | threshold | meets |", "|---" * (len(splits) + 3) + "|"]
    for name, row in rows.items():
        threshold = row.get("threshold")
        rate = threshold.get("rate") if isinstance(threshold, dict) else threshold
        cells = " | ".join(_rate(row.get(s)) for s in splits)
        lines.append(f"| {name} | {cells} | {'–' if rate is None else f'{rate:.0%}'} | "
                     f"{'yes' if row.get('meets') else 'no'} |")
    over = (card.get("over_refusal") or {}).get("all")
    if over and over.get("total"):
        lines.append(f"\nOver-refusal (answerable questions refused): {_rate(over)}.")
    return "\n".join(lines) + "\n"


def _strength(meta: dict) -> str:
    strength = meta.get("strength")
    return f", its LoRA update scaled by {strength:g} (train.strengths)" if isinstance(strength, (int, float)) else ""


def write_card(out: Path, run_dir: Path, checkpoint: Path, base_name: str, dtype: str, gguf_name: str | None,
               gguf_diff: float | None) -> Path:
    """Write ``out/README.md`` (and copy the run's ``scorecard.svg`` beside it)."""
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    meta = json.loads((checkpoint / "behavio.json").read_text())
    spec_id = config.get("spec", meta.get("spec", "spec"))
    spec_text, spec_source = _spec_text(run_dir, config)
    plot = run_dir / "scorecard.svg"
    if plot.is_file():
        shutil.copy(plot, out / "scorecard.svg")
    base = _base_model_id(config.get("base_model_name") or base_name)
    settings = ", ".join(f"{k}={config[k]}" for k in ("method", "epochs", "lr", "anchor", "lora_r", "lora_alpha",
                                                       "quantization", "seed") if k in config)
    parts = [
        "---",
        f"base_model: {base}",
        "library_name: transformers",
        "tags: [behavio, lora, merged]",
        "---",
        "",
        f"# {spec_id}",
        "",
        f"{base} fine-tuned by behavio {__version__} to follow the behavior spec `{spec_id}` below: {checkpoint.name} "
        f"({meta.get('stage')} step {meta.get('step')}{_strength(meta)}) of run `{run_dir.name}`, the LoRA adapter merged into the "
        f"fp32 base weights and saved as {dtype} safetensors" + (f", plus `{gguf_name}`" if gguf_name else "") + ".",
        "",
        "## Scorecard",
        "",
        _scorecard_section(run_dir, checkpoint.name),
    ]
    if plot.is_file():
        parts += ["![pass rate per behavior against the training step](scorecard.svg)", ""]
    parts += ["## Spec", "", f"From {spec_source}.", ""]
    if spec_text is not None:
        parts += ["```yaml", spec_text.rstrip("\n"), "```", ""]
    parts += ["## Training", "", f"Settings: {settings}." if settings else "Settings: see the run's config.json.", ""]
    if config.get("quantization") == "4bit" or (config.get("quantization") == "auto" and config.get("device") == "cuda"):
        parts += ["The adapter was trained on the 4-bit (NF4) base and is merged into the original weights, as "
                  "QLoRA merges are; the scorecard above was measured on the 4-bit base with the adapter.", ""]
    parts += ["## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              'model = AutoModelForCausalLM.from_pretrained("PATH")', 'tokenizer = AutoTokenizer.from_pretrained("PATH")',
              'ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi!"}], add_generation_prompt=True, '
              'return_tensors="pt")', "print(tokenizer.decode(model.generate(ids, max_new_tokens=64, do_sample=False)[0]))",
              "```", ""]
    if gguf_name:
        parts += [f"`{gguf_name}` holds the same weights; transformers loads it with "
                  f'`AutoModelForCausalLM.from_pretrained("PATH", gguf_file="{gguf_name}")`, and its logits matched '
                  f"the safetensors model's within {gguf_diff:.1e} (largest absolute difference) when exported.", ""]
    path = out / "README.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
