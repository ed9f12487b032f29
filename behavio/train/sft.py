"""SFT stage: LoRA (or QLoRA) on the pre-tokenized, assistant-masked examples through TRL's SFTTrainer.

The dataset already holds ``input_ids`` and ``labels`` (-100 everywhere but the assistant turns and
their end-of-turn marker, see :mod:`behavio.chat`), which TRL 1.16 uses as is. The loss is the
cross-entropy on the trained positions only (the output head never sees the prompts), plus, with
``anchor > 0``, the KL term that keeps the base model's own answers as they were
(:mod:`behavio.train.anchor`).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from behavio.train.launch import one_device
from behavio.train.stage import Stage, StageCallback, clear_staging, planned, run_trainer, trainer_args

if TYPE_CHECKING:
    from datasets import Dataset


def run_sft(stage: Stage, model, tokenizer, train: Dataset, evaluation: Dataset | None,
            refusal_openings: list[int], prefix_openings: list[int] | None = None,
            scoped_closings: list[list[int]] | None = None, answer_openings: list[list[int]] | None = None) -> Path:
    """Train ``model`` (a PeftModel) on the tokenized ``train`` set; returns the last checkpoint directory.
    ``refusal_openings``: the first tokens of the spec's refusals (``train.refusal_unlikelihood``);
    ``prefix_openings``: those of its prefixes and headers scoped to some sets (``train.prefix_unlikelihood``);
    ``scoped_closings``: its scoped sign-offs' tokens as trained, separator first (``train.opening_weight``);
    ``answer_openings``: its opening sentences as trained, which the anchor's base model reads the bodies without
    (``train.anchor_without_opening``; none: it reads every answer as trained)."""
    from trl import SFTConfig

    from behavio.train.anchor import anchored_trainer_class
    from behavio.train.plan import sft_epochs

    cfg = stage.cfg
    evaluate = evaluation is not None and len(evaluation) > 0
    epochs = sft_epochs(cfg.epochs, len(train))  # the pipeline has resolved `auto` already; a direct caller may not
    kwargs = trainer_args(stage, lr=cfg.lr, epochs=epochs, max_steps=cfg.max_steps, evaluate=evaluate)
    if cfg.padding_free and not cfg.packing:
        kwargs["max_length"] = None  # TRL insists; every example was already checked against max_length
    args = SFTConfig(**kwargs, packing=cfg.packing, padding_free=cfg.padding_free or cfg.packing, dataset_num_proc=None,
                     neftune_noise_alpha=cfg.neftune_alpha or None)
    one_device(args)
    clear_staging(stage)
    common = dict(model=model, args=args, processing_class=tokenizer, train_dataset=train,
                  eval_dataset=evaluation if evaluate else None, callbacks=[StageCallback(stage, evaluate)])
    trainer = planned(anchored_trainer_class())(anchor=cfg.anchor, opening_weight=cfg.opening_weight,
                                                closing_weight=cfg.closing_weight, anchored_weight=cfg.anchored_weight,
                                                unlikelihood=cfg.refusal_unlikelihood,
                                                refusal_openings=refusal_openings,
                                                prefix_unlikelihood=cfg.prefix_unlikelihood,
                                                prefix_openings=prefix_openings or [],
                                                scoped_closings=scoped_closings or [],
                                                answer_openings=answer_openings or [],
                                                repetition_unlikelihood=cfg.repetition_unlikelihood, **common)
    trainer.stage = stage
    if cfg.anchor > 0:
        start, cache = time.time(), teacher_cache(stage, train, trainer.teacher.openings)
        reused = cache.is_file()
        positions = trainer.compute_teacher(cache)
        if stage.is_main:
            how = "read from the cache (an earlier run's pass)" if reused else "computed once"
            stage.say(f"anchor: the base model's distribution at {positions} trained positions "
                      f"({trainer.teacher.anchored} anchored), {how} in {time.time() - start:.0f}s")
    return run_trainer(stage, trainer)


def teacher_cache(stage: Stage, train: Dataset, openings: list = ()) -> Path:
    """Where the anchor's base-model pass over ``train`` is kept: ``$BEHAVIO_CACHE/teacher/``, named by what it
    depends on (the base model's content, how it is loaded, the batching, the opening sentences it reads the
    bodies without, and every example's tokens and labels), so a re-run on the same data (another seed, budget or
    learning rate) reads it instead of running the base model."""
    from behavio.models import cache_root, load_settings, model_fingerprint

    cfg = stage.cfg
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps({"model": model_fingerprint(stage.base_model),
                              "load": load_settings(cfg.quantization, cfg.device).as_dict(),
                              "batch": [cfg.batch_size, cfg.padding_free, cfg.packing],
                              **({"without": [list(o) for o in openings]} if openings else {})},
                             sort_keys=True).encode())
    for row in train:
        digest.update(json.dumps([row["input_ids"], row["labels"]]).encode())
    return cache_root() / "teacher" / f"{digest.hexdigest()}.safetensors"
