"""DPO stage: TRL's DPOTrainer on the selected preference pairs, continuing the SFT adapter.

The loss is ``sigmoid`` DPO plus ``dpo_sft_weight`` x the SFT (NLL on chosen) term, TRL's
``loss_type=["sigmoid", "sft"]``, which keeps DPO from collapsing into repetition. The reference is
the same model: with ``dpo_reference: base`` the adapter is disabled for the reference pass; with
``sft`` TRL keeps a frozen copy of the starting adapter (a few MB). No second model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from behavio.train.stage import Stage, StageCallback, clear_staging, run_trainer, trainer_args

if TYPE_CHECKING:
    from datasets import Dataset

REF_ADAPTER = "ref"  # the name TRL gives the frozen copy of the starting adapter


def dpo_loss(stage: Stage) -> dict:
    """``loss_type`` and ``loss_weights`` for DPOConfig."""
    weight = stage.cfg.dpo_sft_weight
    if weight > 0:
        return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, weight]}
    return {"loss_type": ["sigmoid"]}


def run_dpo(stage: Stage, model, tokenizer, train: Dataset, evaluation: Dataset | None) -> Path:
    """Train ``model`` (a PeftModel whose ``default`` adapter DPO continues); returns the last checkpoint."""
    from trl import DPOConfig, DPOTrainer

    cfg = stage.cfg
    evaluate = evaluation is not None and len(evaluation) > 0
    args = DPOConfig(**trainer_args(stage, lr=cfg.dpo_lr, epochs=cfg.dpo_epochs, max_steps=cfg.dpo_max_steps,
                                    evaluate=evaluate),
                     beta=cfg.dpo_beta, **dpo_loss(stage), precompute_ref_log_probs=False, dataset_num_proc=None)
    clear_staging(stage)
    trainer = DPOTrainer(model=model, ref_model=None, args=args, processing_class=tokenizer, train_dataset=train,
                         eval_dataset=evaluation if evaluate else None, callbacks=[StageCallback(stage)])
    if cfg.dpo_reference == "base" and REF_ADAPTER in trainer.model.peft_config:
        trainer.model.delete_adapter(REF_ADAPTER)  # reference pass = adapter disabled
    return run_trainer(stage, trainer)
