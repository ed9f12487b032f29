"""SFT stage: LoRA (or QLoRA) on the pre-tokenized, assistant-masked examples through TRL's SFTTrainer.

The dataset already holds ``input_ids`` and ``labels`` (-100 everywhere but the assistant turns and
their end-of-turn marker, see :mod:`behavio.chat`), which TRL 1.16 uses as is. The loss is the
cross-entropy on the trained positions only (the output head never sees the prompts), plus, with
``anchor > 0``, the KL term that keeps the base model's own answers as they were
(:mod:`behavio.train.anchor`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from behavio.train.launch import one_device
from behavio.train.stage import Stage, StageCallback, clear_staging, planned, run_trainer, trainer_args

if TYPE_CHECKING:
    from datasets import Dataset


def run_sft(stage: Stage, model, tokenizer, train: Dataset, evaluation: Dataset | None,
            refusal_openings: list[int]) -> Path:
    """Train ``model`` (a PeftModel) on the tokenized ``train`` set; returns the last checkpoint directory.
    ``refusal_openings``: the first tokens of the spec's refusals (``train.refusal_unlikelihood``)."""
    from trl import SFTConfig

    from behavio.train.anchor import anchored_trainer_class

    cfg = stage.cfg
    evaluate = evaluation is not None and len(evaluation) > 0
    kwargs = trainer_args(stage, lr=cfg.lr, epochs=cfg.epochs, max_steps=cfg.max_steps, evaluate=evaluate)
    if cfg.padding_free and not cfg.packing:
        kwargs["max_length"] = None  # TRL insists; every example was already checked against max_length
    args = SFTConfig(**kwargs, packing=cfg.packing, padding_free=cfg.padding_free or cfg.packing, dataset_num_proc=None)
    one_device(args)
    clear_staging(stage)
    common = dict(model=model, args=args, processing_class=tokenizer, train_dataset=train,
                  eval_dataset=evaluation if evaluate else None, callbacks=[StageCallback(stage, evaluate)])
    trainer = planned(anchored_trainer_class())(anchor=cfg.anchor, opening_weight=cfg.opening_weight,
                                                closing_weight=cfg.closing_weight,
                                                unlikelihood=cfg.refusal_unlikelihood,
                                                refusal_openings=refusal_openings, **common)
    trainer.stage = stage
    if cfg.anchor > 0:
        start = time.time()
        positions = trainer.compute_teacher()
        if stage.is_main:
            stage.say(f"anchor: the base model's distribution at {positions} trained positions "
                      f"({trainer.teacher.anchored} anchored), computed once in {time.time() - start:.0f}s")
    return run_trainer(stage, trainer)
