"""``behavio preview SPEC``: a few training examples as the model sees them, trained tokens highlighted.

Uses the same chat formatting and masking as training (:func:`behavio.chat.describe_trained_tokens`),
so what is highlighted is exactly what gets a loss. Answers the base model has not written yet are
shown as a placeholder unless ``fill`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from behavio import pending
from behavio.check.cases import max_new_tokens
from behavio.errors import BehavioError, did_you_mean

PLACEHOLDER = "[answer written by the base model]"


@dataclass
class Preview:
    """One example: its id, the rendered text as (text, trained) runs, and token counts."""

    id: str
    segments: list
    trained_tokens: int
    total_tokens: int
    notes: tuple[str, ...] = ()  # how the tokenizer was converted to another chat template
    warnings: tuple[str, ...] = ()  # what the run would warn about the spec's training answers


def preview_tokenizer(base_model: str, template: str | None = None):
    """(the tokenizer of ``base_model`` (``default`` without converting the weights), notes): with ``template``,
    converted to that shipped chat template (:func:`behavio.chat.use_chat_template`)."""
    from behavio.chat import use_chat_template
    from behavio.models import load_tokenizer, resolve_base_model, resolve_default_tokenizer

    path = resolve_default_tokenizer() if base_model == "default" else resolve_base_model(base_model)
    tokenizer = load_tokenizer(path)
    notes = use_chat_template(tokenizer, template) if template else []
    return tokenizer, tuple(notes)


def _placeholders(rows: list[dict]) -> list[dict]:
    def sub(value):
        if isinstance(value, str):
            return pending.replace_markers(value, lambda _key: PLACEHOLDER)
        if isinstance(value, list):
            return [sub(v) for v in value]
        if isinstance(value, dict):
            return {k: sub(v) for k, v in value.items()}
        return value

    return [sub(r) for r in rows]


def _spread(rows: list[dict], count: int) -> list[dict]:
    """``count`` rows, one per prompt set first, so every behavior shows up."""
    by_set: dict[str, list[dict]] = {}
    for row in rows:
        by_set.setdefault(row.get("prompt_set", ""), []).append(row)
    picked: list[dict] = []
    while len(picked) < min(count, len(rows)):
        for group in by_set.values():
            if group and len(picked) < count:
                picked.append(group.pop(0))
    return picked


def _of_set(rows: list[dict], prompt_set: str, stage: str) -> list[dict]:
    """The rows of ``prompt_set``; an error naming the sets that have rows when it has none."""
    picked = [r for r in rows if r.get("prompt_set") == prompt_set]
    if not picked:
        sets = list(dict.fromkeys(r.get("prompt_set", "") for r in rows))
        raise BehavioError(f"--set {prompt_set!r}: no {stage} example of that prompt set{did_you_mean(prompt_set, sets)}; "
                           f"the sets with {stage} examples: {', '.join(sets)}")
    return picked


def build_previews(spec_path: str | Path, *, count: int = 3, stage: str = "sft", base_model: str | None = None,
                   template: str | None = None, fill: bool = False, overrides: list[str] | None = None,
                   prompt_set: str | None = None) -> list[Preview]:
    """The first ``count`` examples of ``stage`` (``sft`` or ``dpo``: chosen and rejected) with their masks, of one
    ``prompt_set`` when given (else one set after another)."""
    from behavio.chat import describe_trained_tokens, tokenize_with_assistant_mask
    from behavio.compiler.build import compile_spec
    from behavio.train.config import resolve_config
    from behavio.jsonio import parse_jsonl

    if stage not in ("sft", "dpo"):
        raise BehavioError(f"--stage {stage!r}: expected sft or dpo")
    compiled = compile_spec(spec_path)
    cfg = resolve_config(compiled.spec.train, overrides, base_model)
    every_sft = _placeholders(parse_jsonl(compiled.files["sft.jsonl"]))
    rows = parse_jsonl(compiled.files[f"{stage}.jsonl"])
    rows = _spread(_of_set(rows, prompt_set, stage) if prompt_set else rows, count)
    if fill and any(r.get("pending") for r in rows):
        from behavio.fill import fill_pending, fill_rows, run_fill_settings

        keys = {k for r in rows for k in r.get("pending", [])}
        waiting = [p for p in parse_jsonl(compiled.files["pending.jsonl"]) if p["key"] in keys]
        rows = fill_rows(rows, fill_pending(waiting, cfg.base_model, **run_fill_settings(cfg)))
    rows = _placeholders(rows)
    tokenizer, notes = preview_tokenizer(cfg.base_model, template)
    warnings = _long_answers(every_sft, tokenizer, cfg, max_new_tokens(compiled.spec))
    conversations = []
    for row in rows:
        if stage == "sft":
            conversations.append((row["id"], row["messages"]))
        else:
            conversations += [(f"{row['id']} (chosen)", row["prompt"] + row["chosen"]),
                              (f"{row['id']} (rejected)", row["prompt"] + row["rejected"])]
    previews = []
    for example_id, messages in conversations:
        tokens = tokenize_with_assistant_mask(messages, tokenizer, cfg.max_length, fold=cfg.fold_system, example_id=example_id)
        segments = describe_trained_tokens(messages, tokenizer, fold=cfg.fold_system, max_length=cfg.max_length)
        previews.append(Preview(example_id, segments, sum(tokens["assistant_masks"]), len(tokens["input_ids"]), notes,
                                warnings))
    return previews


def _long_answers(rows: list[dict], tokenizer, cfg, limit: int | None) -> tuple[str, ...]:
    """The run's warning about training answers longer than the check lets an answer write, for the answers the
    spec writes itself (the base model's are counted by the run, after the fill)."""
    from behavio.train.data import long_answers_warning, sft_features

    labels = [features["labels"] for features in sft_features(rows, tokenizer, cfg)]
    found = long_answers_warning(rows, labels, limit)
    if found and any(r.get("pending") for r in rows):
        found += "; the answers the base model writes are counted by the run, after the fill"
    return (found,) if found else ()


def render_plain(preview: Preview) -> str:
    """The example with trained text inside ``[[...]]`` (for logs and non-terminals)."""
    body = "".join(f"[[{s.text}]]" if s.trained else s.text for s in preview.segments)
    return f"== {preview.id}: {preview.trained_tokens} of {preview.total_tokens} tokens trained\n{body}"


def print_previews(previews: list[Preview], console, plain: bool = False) -> None:
    """Trained text in bold green on a terminal, ``[[...]]`` otherwise."""
    from rich.text import Text

    for note in dict.fromkeys(n for p in previews for n in p.notes):
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    for warning in dict.fromkeys(w for p in previews for w in p.warnings):
        console.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    for preview in previews:
        if plain or not console.is_terminal:
            console.print(render_plain(preview), markup=False, highlight=False, soft_wrap=True)
            continue
        console.print(f"== {preview.id}: {preview.trained_tokens} of {preview.total_tokens} tokens trained",
                      markup=False, highlight=False)
        text = Text()
        for segment in preview.segments:
            text.append(segment.text, style="bold green underline" if segment.trained else "dim")
        console.print(text, soft_wrap=True)
