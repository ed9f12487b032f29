"""Batched greedy generation for chat conversations, and a persistent cache of what was generated.

Prompts are rendered with the chat template (system folded the same way as in training), decoded
greedily by :mod:`behavio.decode` until EOS (the tokenizer's or the model's own) or the template's
end-of-turn token, and returned in input order with special tokens stripped. Greedy is exact: the
next token is the argmax of the logits, so nothing in the model's generation_config.json (a
repetition penalty, sampling, suppressed tokens) changes what is picked.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from behavio.decode import Decoded, DecodeStats, Row, decode

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


def progress_bar(total: int, label: str, quiet: bool):
    """A rich progress bar (its one task added) on a terminal; None when quiet, not a TTY, or for short work."""
    if quiet or total < 2 or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("cases"),
                        TimeElapsedColumn(), console=Console(stderr=True), transient=True)
    progress.add_task(label, total=total)
    return progress


def generate(model, tokenizer, conversations: list[list[dict]], *, max_new_tokens: int, batch_size: int,
             fold: bool | str = "auto", label: str = "generating", quiet: bool = False,
             on_batch: Callable[[list[int], list[Generation]], None] | None = None,
             stats: DecodeStats | None = None) -> list[Generation]:
    """Greedy answers to ``conversations`` (each ends with a user turn), in input order.

    ``fold`` folds the system message into the first user turn (``auto``: when the template needs it).
    ``on_batch(indices, generations)`` is called after every batch (for caching and progress).
    """
    rows = [Row(encode_conversation(messages, tokenizer, fold)) for messages in conversations]
    return generate_rows(model, tokenizer, rows, max_new_tokens=max_new_tokens, batch_size=batch_size, label=label,
                         quiet=quiet, on_batch=on_batch, stats=stats)


def encode_conversation(messages: list[dict], tokenizer, fold: bool | str = "auto") -> list[int]:
    """The generation prompt's token ids; a conversation with earlier assistant turns is cut as training cuts it."""
    from behavio.chat import encode_prompt, encode_text, render_prompt

    if any(m.get("role") == "assistant" for m in messages):
        return encode_prompt(messages, tokenizer, fold)
    return encode_text(render_prompt(messages, tokenizer, fold), tokenizer)


def generate_rows(model, tokenizer, rows: list[Row], *, max_new_tokens: int, batch_size: int,
                  label: str = "generating", quiet: bool = False,
                  on_batch: Callable[[list[int], list[Generation]], None] | None = None,
                  stats: DecodeStats | None = None) -> list[Generation]:
    """Greedy answers to encoded prompt ``rows`` (each with its adapter and draft), decoded as text, in input order."""
    if not rows:
        return []
    stops = stop_token_ids(tokenizer, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    progress = progress_bar(len(rows), label, quiet)

    def done(indices: list[int], decoded: list[Decoded]) -> None:
        gens = [as_generation(tokenizer, d) for d in decoded]
        if on_batch:
            on_batch(indices, gens)
        if progress:
            progress.advance(progress.task_ids[0], len(indices))

    if progress:
        progress.start()
    was_training = model.training
    model.eval()  # no dropout while answering
    try:
        decoded = decode(model, rows, max_new_tokens=max_new_tokens, stop_ids=stops, pad_id=pad, batch_size=batch_size,
                         on_batch=done, stats=stats)
    finally:
        model.train(was_training)
        if progress:
            progress.stop()
    return [as_generation(tokenizer, d) for d in decoded]


def as_generation(tokenizer, decoded: Decoded) -> Generation:
    """Decoded token ids as answer text (special tokens dropped, whitespace stripped)."""
    return Generation(tokenizer.decode(decoded.tokens, skip_special_tokens=True).strip(), decoded.finished)


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
