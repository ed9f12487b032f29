"""Answers of one or more checkpoints to the check cases, on one base model.

- The checkpoints' LoRA adapters are loaded side by side on the base model (PEFT named adapters).
- float32 base weights: one checkpoint at a time answers with its adapter merged into copies of the target
  layers' weights (PEFT ``safe_merge``), so no forward pass does any LoRA work; the base's own tensors are
  put back afterwards, never written.
- 4-bit (bitsandbytes) or half-precision weights cannot take a merge (4-bit weights would be requantized,
  half-precision ones would round the adapter's small changes away): there the adapters stay unmerged and
  rows of several checkpoints share a batch (PEFT ``adapter_names``).
- The newest checkpoint answers first; every other checkpoint's answer to a case is then drafted
  from it (:mod:`behavio.decode` keeps a draft token only where it is the model's own greedy
  choice, so the answers are exactly greedy whatever the draft). Consecutive checkpoints of one
  run mostly agree, and a drafted answer costs one prompt-speed pass instead of one step per token.
- Every answer goes into its checkpoint's generation cache as soon as its batch is done.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from behavio.decode import Decoded, DecodeStats, Row, decode
from behavio.errors import BehavioError
from behavio.generate import (Generation, GenerationCache, as_generation, encode_conversation, progress_bar,
                              stop_token_ids)

ADAPTERS_AT_ONCE = 8  # adapters loaded side by side per group (memory: one adapter's weights each)
Log = Callable[[str], None]


@dataclass
class Job:
    """One model to answer with: ``adapter`` (a checkpoint directory) on the base model, or the base model itself."""

    label: str
    adapter: Path | None
    cache: GenerationCache
    problem: str | None = None
    answers: dict[str, Decoded] = field(default_factory=dict)  # decoded in this call (token ids for drafts)

    def missing(self, keys: list[str]) -> list[str]:
        return [k for k in keys if self.cache.get(k) is None]


class Adapters:
    """LoRA adapters attached side by side to one base model (PEFT ``load_adapter``); one at a time can answer
    merged (:meth:`merged`)."""

    def __init__(self, model):
        self.base_model = model
        self.peft = None
        self._n = 0

    def load(self, path: Path) -> str:
        """Attach the adapter at ``path``; its name. BehavioError naming ``path`` if it does not load."""
        from peft import PeftModel

        self._n += 1
        name = f"checkpoint{self._n}"
        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base_model, str(path), adapter_name=name, is_trainable=False)
            else:
                self.peft.load_adapter(str(path), adapter_name=name, is_trainable=False)
                if self.peft.active_adapter not in self.peft.peft_config:  # the active one was unloaded
                    self.peft.set_adapter(name)
        except Exception as exc:
            raise BehavioError(f"{path}: adapter does not load ({type(exc).__name__}: {exc})") from None
        self.peft.eval()
        return name

    def unload(self, names: list[str]) -> None:
        for name in names:
            if self.peft is not None and name in self.peft.peft_config:
                self.peft.delete_adapter(name)

    @property
    def model(self):
        return self.peft if self.peft is not None else self.base_model

    @property
    def mergeable(self) -> bool:
        """Whether an adapter can answer merged: float32 base weights, not quantized (merging into 4-bit
        weights is impossible, and into bf16/fp16 ones would round the adapter's small changes away)."""
        from behavio.models import is_quantized

        weights = [p for p in self.base_model.parameters() if p.dim() == 2]
        return not is_quantized(self.base_model) and all(p.dtype == torch.float32 for p in weights)

    @contextmanager
    def answering_as(self, name: str | None):
        """The model answering as adapter ``name`` merged (:meth:`merged`), or as the base (``None``)."""
        if name is not None:
            with self.merged(name) as model:
                yield model
        elif self.peft is None:
            yield self.base_model
        else:
            with self.peft.disable_adapter():
                yield self.peft

    @contextmanager
    def merged(self, name: str):
        """The model answering as adapter ``name`` merged into its target layers' weights (no LoRA work per
        forward). PEFT's ``safe_merge`` adds the adapter into a *copy* of each weight; afterwards the base's
        own tensors are put back, never written, and every layer is marked unmerged."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for m in self.peft.modules() if isinstance(m, BaseTunerLayer)]
        bases = [layer.get_base_layer() for layer in layers]
        kept = [(layer, base, base.weight.data, base.bias.data if getattr(base, "bias", None) is not None else None)
                for layer, base in zip(layers, bases)]
        self.peft.set_adapter(name)
        try:
            for layer in layers:
                layer.merge(safe_merge=True, adapter_names=[name])
            yield self.peft
        finally:
            for layer, base, weight, bias in kept:
                base.weight.data = weight
                if bias is not None:
                    base.bias.data = bias
                layer.merged_adapters.clear()


def _encode(items: dict[str, list[dict]], tokenizer, fold) -> dict[str, list[int]]:
    return {key: encode_conversation(messages, tokenizer, fold) for key, messages in items.items()}


def _draft(key: str, jobs: list[Job], tokenizer, stop: int) -> list[int] | None:
    """Another job's answer to ``key`` as token ids: decoded in this call if possible, else from its cache."""
    for job in jobs:
        if key in job.answers:
            decoded = job.answers[key]
            return decoded.tokens + ([stop] if decoded.finished else [])
    for job in jobs:
        gen = job.cache.get(key)
        if gen is not None and gen.text:
            tokens = tokenizer(gen.text, add_special_tokens=False)["input_ids"]
            return tokens + ([stop] if gen.finished else [])
    return None


def answer(base_model, tokenizer, jobs: list[Job], items: dict[str, list[dict]], *, max_new_tokens: int,
           batch_size: int, fold: bool | str = "auto", quiet: bool = False, log: Log = lambda _: None,
           stats: DecodeStats | None = None) -> int:
    """Fill every job's cache with its answers to ``items`` (key -> conversation); returns answers generated.

    A job whose adapter does not load gets ``problem`` set and is skipped. Conversations with open assistant
    turns are replayed per job (:func:`_answer_conversations`); the others share batches across jobs.
    """
    from behavio.conversation import is_open

    settings = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, fold=fold, quiet=quiet, log=log, stats=stats)
    closed = {k: m for k, m in items.items() if not is_open(m)}
    opened = {k: m for k, m in items.items() if is_open(m)}
    generated = _answer_written(base_model, tokenizer, jobs, closed, **settings) if closed else 0
    if opened:
        generated += _answer_conversations(base_model, tokenizer, jobs, opened, **settings)
    return generated


def _answer_conversations(base_model, tokenizer, jobs: list[Job], items: dict[str, list[dict]], **settings) -> int:
    """Each job writes the open assistant turns of ``items`` itself, earliest first (:func:`behavio.conversation.replay`,
    each turn cached by the conversation up to it), then answers the last user turn, under the case's own key."""
    from behavio.conversation import replay

    generated = 0
    for job in jobs:
        missing = {k: items[k] for k in job.missing(list(items))}
        if job.problem is not None or not missing:
            continue

        def write(todo: dict[str, list[dict]], job: Job = job) -> dict[str, str]:
            nonlocal generated
            generated += _answer_written(base_model, tokenizer, [job], todo, **settings)
            return {k: (job.cache.get(k).text if job.cache.get(k) is not None else "") for k in todo}

        written = replay(missing, write)
        if job.problem is None:
            generated += _answer_written(base_model, tokenizer, [job], written, **settings)
    return generated


def _answer_written(base_model, tokenizer, jobs: list[Job], items: dict[str, list[dict]], *, max_new_tokens: int,
                    batch_size: int, fold: bool | str, quiet: bool, log: Log, stats: DecodeStats | None) -> int:
    """:func:`answer` for conversations whose every earlier turn is written."""
    keys = list(items)
    todo = [job for job in jobs if job.missing(keys)]
    if not todo:
        return 0
    prompts = _encode(items, tokenizer, fold)
    stops = stop_token_ids(tokenizer, base_model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    adapters = Adapters(base_model)
    reference, rest = todo[-1], todo[:-1]
    total = sum(len(job.missing(keys)) for job in todo)
    progress = progress_bar(total, "checking", quiet)
    generated = 0
    if progress:
        progress.start()
    try:
        for group in [[reference]] + [rest[i:i + ADAPTERS_AT_ONCE] for i in range(0, len(rest), ADAPTERS_AT_ONCE)]:
            if not group:
                continue
            others = [j for j in jobs if j not in group and j.problem is None]
            generated += _answer_group(adapters, tokenizer, group, others, prompts, keys, stops, pad, max_new_tokens,
                                       batch_size, progress, log, stats)
    finally:
        if progress:
            progress.stop()
    return generated


def _answer_group(adapters: Adapters, tokenizer, group: list[Job], others: list[Job], prompts: dict[str, list[int]],
                  keys: list[str], stops: list[int], pad: int, max_new_tokens: int, batch_size: int, progress,
                  log: Log, stats: DecodeStats | None) -> int:
    """Answer the missing cases of ``group`` (adapters loaded together), drafted from the ``others``' answers."""
    names: dict[int, str | None] = {}
    for job in group:
        if job.adapter is None:
            names[id(job)] = None
            continue
        try:
            names[id(job)] = adapters.load(job.adapter)
        except BehavioError as exc:
            job.problem = str(exc)
    sound = [job for job in group if job.problem is None]
    rows, owners = [], []
    for job in sound:
        for key in job.missing(keys):
            rows.append(Row(prompts[key], names[id(job)], _draft(key, others, tokenizer, stops[0])))
            owners.append((job, key))
    if rows:
        drafted = sum(1 for r in rows if r.draft)
        log(f"generating {len(rows)} answers of {', '.join(j.label for j in sound)}"
            + (f" ({drafted} drafted from other checkpoints' answers)" if drafted else ""))

        def done(indices: list[int], decoded: list[Decoded]) -> None:
            by_job: dict[int, dict[str, Generation]] = {}
            for i, d in zip(indices, decoded):
                job, key = owners[i]
                job.answers[key] = d
                by_job.setdefault(id(job), {})[key] = as_generation(tokenizer, d)
            for job in sound:
                if id(job) in by_job:
                    job.cache.put(by_job[id(job)])
            if progress:
                progress.advance(progress.task_ids[0], len(indices))

        settings = dict(max_new_tokens=max_new_tokens, stop_ids=stops, pad_id=pad, batch_size=batch_size, stats=stats)
        if adapters.mergeable:
            for job in sound:  # one checkpoint at a time, merged: no LoRA work in any forward pass
                mine = [i for i, (owner, _) in enumerate(owners) if owner is job]
                with adapters.answering_as(names[id(job)]) as model:
                    decode(model, [replace(rows[i], adapter=None) for i in mine], **settings,
                           on_batch=lambda indices, decoded, mine=mine: done([mine[i] for i in indices], decoded))
        else:  # every checkpoint's rows in the same batches, adapters unmerged (PEFT mixed batches)
            decode(adapters.model, rows, **settings, on_batch=done)
    adapters.unload([n for n in names.values() if n is not None])
    return len(rows)
