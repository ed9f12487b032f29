"""Answers of one or more checkpoints to the check cases, on one base model.

- The checkpoints' LoRA adapters are loaded side by side on the base model (PEFT named adapters), at most
  ADAPTERS_AT_ONCE at a time, and stay unmerged: the base weights are never written.
- Every loaded checkpoint's rows share the same batches (each row answers with its own adapter: every LoRA
  layer applies an adapter to that adapter's range of rows, :mod:`behavio.lora_slices`, or PEFT's
  ``adapter_names`` for adapters that cannot), so a forward pass carries the cases of all of them: fewer,
  fuller passes, each reading the weights once for every checkpoint (:mod:`behavio.decode`; a batch holds
  ``batch_size`` prompts per checkpoint, fewer if their KV cache would not fit its memory bound).
- A case another checkpoint already answered (in its cache, or in an earlier group of this call) is drafted
  from that answer: :mod:`behavio.decode` keeps a draft token only where it is the model's own greedy choice,
  so the answers are exactly greedy whatever the draft.
- Every answer goes into its checkpoint's generation cache as soon as its batch is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from behavio.decode import BASE, Decoded, DecodeStats, Row, decode
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
    """LoRA adapters attached side by side to one base model (PEFT ``load_adapter``)."""

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
    total = sum(len(job.missing(keys)) for job in todo)
    progress = progress_bar(total, "checking", quiet)
    generated = 0
    if progress:
        progress.start()
    try:
        for group in [todo[i:i + ADAPTERS_AT_ONCE] for i in range(0, len(todo), ADAPTERS_AT_ONCE)]:
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
    """Answer the missing cases of ``group`` (adapters loaded together, rows of all in the same batches), drafted
    from the ``others``' answers."""
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
            adapter = names[id(job)] if names[id(job)] is not None or adapters.peft is None else BASE
            rows.append(Row(prompts[key], adapter, _draft(key, others, tokenizer, stops[0])))
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

        decode(adapters.model, rows, max_new_tokens=max_new_tokens, stop_ids=stops, pad_id=pad,
               batch_size=batch_size * len(sound), stats=stats, on_batch=done)
    adapters.unload([n for n in names.values() if n is not None])
    return len(rows)
