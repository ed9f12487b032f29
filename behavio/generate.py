"""Batched greedy generation for chat conversations, and a persistent cache of what was generated.

Prompts are rendered with the chat template (system folded the same way as in training), sorted
by length so each batch pads little, generated with left padding and greedy decoding until EOS (the
tokenizer's or the model's own) or the template's end-of-turn token, and returned in input order with
special tokens stripped. Greedy is exact: nothing in the model's generation_config.json (a repetition
penalty, sampling, suppressed tokens) changes what is picked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from behavio.models import LoadSettings

END_OF_TURN_CANDIDATES = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")


@dataclass(frozen=True)
class Generation:
    """A generated answer; ``finished`` is False when the token limit was hit before a stop token."""

    text: str
    finished: bool


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """Every token that ends an answer: the tokenizer's EOS, the chat template's end-of-turn token (the
    special token that closes an assistant turn) and, given ``model``, the model's own EOS ids from its
    config and generation config (Llama 3 lists three; a fine-tune may add its own)."""
    ids = _as_ids(tokenizer.eos_token_id)
    try:
        marker = "Zq7behavioZq7"
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}],
                                             tokenize=False)
        tail = tokenizer(text.split(marker, 1)[1], add_special_tokens=False)["input_ids"]
        if tail and tail[0] in set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder):
            ids.append(tail[0])
    except Exception:  # no chat template, or one that rejects this conversation: fall back to known names
        vocab = tokenizer.get_vocab()
        ids += [vocab[t] for t in END_OF_TURN_CANDIDATES if t in vocab and t in (tokenizer.chat_template or "")]
    if model is not None:
        inner = transformers_model(model)
        for config in (getattr(inner, "config", None), getattr(inner, "generation_config", None)):
            ids += _as_ids(getattr(config, "eos_token_id", None))
    return list(dict.fromkeys(i for i in ids if i is not None))


def _as_ids(value) -> list[int]:
    """An ``eos_token_id`` (None, one id, or a list) as a list."""
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def transformers_model(model):
    """The transformers model inside a PEFT wrapper (``model`` itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _batches(order: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield order[start:start + size]


def _progress(total: int, label: str, quiet: bool):
    """A rich progress bar on a terminal; None when quiet, not a TTY, or for short work."""
    if quiet or total < 2 or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("cases"),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=True)


def generate(model, tokenizer, conversations: list[list[dict]], *, max_new_tokens: int, batch_size: int,
             fold: bool | str = "auto", label: str = "generating", quiet: bool = False,
             on_batch: Callable[[list[int], list[Generation]], None] | None = None) -> list[Generation]:
    """Greedy answers to ``conversations`` (each ends with a user turn), in input order.

    ``fold`` folds the system message into the first user turn (``auto``: when the template needs it).
    ``on_batch(indices, generations)`` is called after every batch (for caching and progress).
    """
    import torch

    from behavio.chat import encode_prompt, encode_text, render_prompt

    if not conversations:
        return []
    encoded = [encode_prompt(messages, tokenizer, fold) if any(m.get("role") == "assistant" for m in messages)
               else encode_text(render_prompt(messages, tokenizer, fold), tokenizer) for messages in conversations]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    stops = stop_token_ids(tokenizer, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    config = _greedy_config(model, max_new_tokens, stops, pad)
    device = next(model.parameters()).device
    results: list[Generation | None] = [None] * len(encoded)
    progress = _progress(len(encoded), label, quiet)
    task = progress.add_task(label, total=len(encoded)) if progress else None
    if progress:
        progress.start()
    try:
        for batch in _batches(order, max(1, batch_size)):
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]):] = 1
            with torch.inference_mode(), exact_generation(model, config):
                out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
            gens = [_decode(tokenizer, seq[width:].tolist(), stops, max_new_tokens) for seq in out]
            for i, gen in zip(batch, gens):
                results[i] = gen
            if on_batch:
                on_batch(batch, gens)
            if progress:
                progress.advance(task, len(batch))
    finally:
        if progress:
            progress.stop()
    return results  # type: ignore[return-value]


# Every field through which a model's generation_config.json can change what greedy decoding picks,
# at its neutral value. transformers fills each field a GenerationConfig leaves unset (None) from
# model.generation_config (Qwen2.5-Instruct ships repetition_penalty=1.05, most instruct models
# do_sample/temperature/top_p), so none of them is left unset. The sampling-only fields (min_p, top_h)
# do nothing with do_sample=False and warn when set; min_new_tokens=0 overrides any min_length.
NEUTRAL_DECODING = dict(
    do_sample=False, num_beams=1, num_beam_groups=1, num_return_sequences=1,
    temperature=1.0, top_k=50, top_p=1.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0,
    repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0,
    length_penalty=1.0, diversity_penalty=0.0, guidance_scale=1.0, min_new_tokens=0,
    renormalize_logits=False, remove_invalid_values=False, use_cache=True, early_stopping=False,
)


def _greedy_config(model, max_new_tokens: int, stops: list[int], pad: int):
    """Greedy decoding whatever the model's generation config says: every decoding field set to its
    neutral value, stopping on ``stops``. Fields whose neutral value is "unset" (suppress_tokens,
    sequence_bias, forced_eos_token_id...) cannot be pinned in a GenerationConfig; :func:`exact_generation`
    sets the model's own config aside so they are not inherited either."""
    from transformers import GenerationConfig

    return GenerationConfig(**NEUTRAL_DECODING, max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad,
                            bos_token_id=getattr(transformers_model(model).config, "bos_token_id", None))


@contextlib.contextmanager
def exact_generation(model, config) -> Iterator[None]:
    """While inside, ``model.generate`` sees ``config`` as the model's own generation config too, so
    nothing from the model's generation_config.json is merged into the fields ``config`` leaves unset."""
    inner = transformers_model(model)
    saved = inner.generation_config
    inner.generation_config = config
    try:
        yield
    finally:
        inner.generation_config = saved


def _decode(tokenizer, new_tokens: list[int], stops: list[int], max_new_tokens: int) -> Generation:
    stop_at = next((k for k, t in enumerate(new_tokens) if t in stops), None)
    body = new_tokens if stop_at is None else new_tokens[:stop_at]
    finished = stop_at is not None or len(new_tokens) < max_new_tokens
    return Generation(tokenizer.decode(body, skip_special_tokens=True).strip(), finished)


DECODING = "greedy-exact/1"  # bump when a change to decoding changes what is generated
BACKEND = "transformers"      # what generates: the local transformers model (an HTTP endpoint would differ)


def generation_settings(purpose: str, *, max_new_tokens: int, fold: bool | str, load: LoadSettings) -> dict:
    """Everything besides the model's files and the prompt that changes a generated answer: how it is
    decoded, how long, how the system message is folded, and the device, dtype and quantization the
    model runs with. Part of every generation cache key."""
    return {"purpose": purpose, "max_new_tokens": max_new_tokens, "fold": fold, "decoding": DECODING,
            "backend": BACKEND, **load.as_dict()}


def settings_key(**settings) -> str:
    """A short stable hash of generation settings (and anything else that changes the answers)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class GenerationCache:
    """Append-only JSONL of generations, one file per (model hash, settings); rows ``{"key","text","finished"}``.

    A partly written last line (a crash mid-write) is ignored on reading and never breaks later appends.
    """

    def __init__(self, folder: Path, model_hash: str, settings: dict, enabled: bool = True):
        self.path = Path(folder) / f"{model_hash[:24]}-{settings_key(**settings)}.jsonl"
        self.enabled = enabled
        self.entries: dict[str, Generation] = self._read() if enabled else {}

    def _read(self) -> dict[str, Generation]:
        entries = {}
        if not self.path.is_file():
            return entries
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                    entries[row["key"]] = Generation(row["text"], bool(row["finished"]))
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
        return entries

    def get(self, key: str) -> Generation | None:
        return self.entries.get(key)

    def put(self, items: dict[str, Generation]) -> None:
        """Remember ``items`` and append them to the file (starting on a fresh line)."""
        self.entries.update(items)
        if not self.enabled or not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps({"key": k, "text": g.text, "finished": g.finished}, ensure_ascii=False) + "\n"
                        for k, g in items.items())
        with open(self.path, "a+b") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell():
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    lines = "\n" + lines
            fh.write(lines.encode("utf-8"))


def generate_cached(model, tokenizer, items: dict[str, list[dict]], cache: GenerationCache, *, max_new_tokens: int,
                    batch_size: int, fold: bool | str = "auto", label: str = "generating",
                    quiet: bool = False) -> tuple[dict[str, Generation], int]:
    """Generations for ``items`` (key -> conversation), from ``cache`` where known; returns (all, generated count).

    A conversation with open assistant turns (content None) is replayed first: the model writes those turns
    (cached by the conversation up to them, :mod:`behavio.conversation`), then answers the last one.
    """
    from behavio.conversation import is_open, replay

    missing = [k for k in items if cache.get(k) is None]
    written = 0

    def save(indices: list[int], gens: list[Generation]) -> None:
        cache.put({missing[i]: g for i, g in zip(indices, gens)})

    def answer(todo: dict[str, list[dict]]) -> dict[str, str]:
        nonlocal written
        gens, n = generate_cached(model, tokenizer, todo, cache, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  fold=fold, label=f"{label} (earlier turns)", quiet=quiet)
        written += n
        return {k: g.text for k, g in gens.items()}

    if missing:
        todo = {k: items[k] for k in missing}
        if any(is_open(m) for m in todo.values()):
            todo = replay(todo, answer)
        generate(model, tokenizer, [todo[k] for k in missing], max_new_tokens=max_new_tokens, batch_size=batch_size,
                 fold=fold, label=label, quiet=quiet, on_batch=save)
    return {k: cache.get(k) for k in items}, len(missing) + written  # type: ignore[misc]
