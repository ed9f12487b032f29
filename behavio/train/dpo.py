"""DPO stage: TRL's DPOTrainer on the selected preference pairs, continuing the SFT adapter.

The loss is ``sigmoid`` DPO plus ``dpo_sft_weight`` x the SFT (NLL on chosen) term, TRL's
``loss_type=["sigmoid", "sft"]``, which keeps DPO from collapsing into repetition. The reference is
the same model: with ``dpo_reference: base`` the adapter is disabled for the reference pass; with
``sft`` TRL keeps a frozen copy of the starting adapter (a few MB). No second model is loaded.

TRL renders every side of a pair as a complete assistant turn, end-of-turn token included. An
on-policy rejection cut at ``dpo_on_policy_tokens`` did not end there, and training it with an end
of turn would teach "do not stop here" at an arbitrary point mid-sentence. Pairs marked
``rejected_open`` have their rejected side trained without it.
"""

from __future__ import annotations

import functools

from pathlib import Path
from typing import TYPE_CHECKING

from behavio.train.launch import one_device
from behavio.train.stage import Stage, StageCallback, clear_staging, planned, run_trainer, trainer_args

if TYPE_CHECKING:
    from datasets import Dataset

REF_ADAPTER = "ref"  # the name TRL gives the frozen copy of the starting adapter


def dpo_loss(stage: Stage) -> dict:
    """``loss_type`` and ``loss_weights`` for DPOConfig."""
    weight = stage.cfg.dpo_sft_weight
    if weight > 0:
        return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, weight]}
    return {"loss_type": ["sigmoid"]}


def without_end_of_turn(ids: list[int], stop_ids: set[int]) -> list[int]:
    """Completion token ids up to (not including) their last stop token; unchanged without one."""
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] in stop_ids:
            return ids[:i]
    return ids


@functools.cache
def dpo_trainer_class():
    """TRL's DPOTrainer that trains open (cut) rejected answers without an end of turn (imported lazily)."""
    from trl import DPOTrainer

    from behavio.generate import stop_token_ids

    class OpenEndedDPOTrainer(DPOTrainer):
        """DPOTrainer; rows with ``rejected_open`` lose the end-of-turn tokens of their rejected side."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if "rejected_open" not in (dataset.column_names or []):
                return dataset
            stops = set(stop_token_ids(processing_class))

            def cut(row: dict) -> dict:
                ids = row["rejected_ids"]
                return {"rejected_ids": without_end_of_turn(ids, stops) if row["rejected_open"] else ids}

            return dataset.map(cut, desc=f"Opening cut rejections of the {dataset_name} dataset")

    return OpenEndedDPOTrainer


def run_dpo(stage: Stage, model, tokenizer, train: Dataset, evaluation: Dataset | None) -> Path:
    """Train ``model`` (a PeftModel whose ``default`` adapter DPO continues); returns the last checkpoint."""
    from trl import DPOConfig

    cfg = stage.cfg
    evaluate = evaluation is not None and len(evaluation) > 0
    args = DPOConfig(**trainer_args(stage, lr=cfg.dpo_lr, epochs=cfg.dpo_epochs, max_steps=cfg.dpo_max_steps,
                                    evaluate=evaluate),
                     beta=cfg.dpo_beta, **dpo_loss(stage), precompute_ref_log_probs=False, dataset_num_proc=None)
    one_device(args)
    clear_staging(stage)
    trainer = planned(dpo_trainer_class())(model=model, ref_model=None, args=args, processing_class=tokenizer,
                                           train_dataset=train, eval_dataset=evaluation if evaluate else None,
                                           callbacks=[StageCallback(stage, evaluate)])
    trainer.stage = stage
    if cfg.dpo_reference == "base" and REF_ADAPTER in trainer.model.peft_config:
        trainer.model.delete_adapter(REF_ADAPTER)  # reference pass = adapter disabled
    return run_trainer(stage, trainer)
