"""What SFT and DPO share: the stage context, trainer arguments, and the callback that publishes
checkpoints under the global step, logs metrics and enforces the time budget."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from transformers import TrainerCallback

from behavio.train.config import TrainConfig
from behavio.train.model import gradient_checkpointing, precision
from behavio.rundir import (DiskFull, MetricsLog, Checkpoint, check_disk_space, complete_checkpoints,
                                  disk_full, publish_checkpoint, staging_dir)

Say = Callable[[str], None]


@dataclass
class Stage:
    """One training stage (``sft`` or ``dpo``) of a run."""

    name: str
    run_dir: Path
    cfg: TrainConfig
    spec_hash: str
    base_model: str
    cuda: bool
    offset: int = 0                       # global step of this stage's step 0
    deadline: float | None = None         # time.time() at which to stop and save
    init_from: str | None = None          # checkpoint this stage's adapter started from
    resume: Checkpoint | None = None
    metrics: MetricsLog | None = None
    say: Say = print
    is_main: bool = True
    saved: list[Path] = field(default_factory=list)
    out_of_time: bool = False
    max_steps: int = 0
    train_metrics: dict = field(default_factory=dict)  # the trainer's train_runtime, train_loss...
    saving: int | None = None                          # the stage step whose checkpoint is being written
    history: list = field(default_factory=list)        # the trainer's log history

    @property
    def staging(self) -> Path:
        return staging_dir(self.run_dir, self.name)


def trainer_args(stage: Stage, *, lr: float, epochs: float, max_steps: int | None, evaluate: bool) -> dict:
    """Keyword arguments shared by SFTConfig and DPOConfig."""
    cfg = stage.cfg
    return {
        "output_dir": str(stage.staging),
        "per_device_train_batch_size": cfg.batch_size,
        "per_device_eval_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "learning_rate": lr,
        "lr_scheduler_type": cfg.lr_scheduler,
        "warmup_steps": cfg.warmup_ratio,
        "num_train_epochs": epochs,
        "max_steps": max_steps or -1,
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "eval_strategy": "steps" if evaluate else "no",
        "eval_steps": cfg.save_steps,
        "logging_steps": cfg.logging_steps,
        "logging_first_step": True,
        "report_to": "none",
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "max_length": cfg.max_length,
        "activation_checkpointing": gradient_checkpointing(cfg, stage.cuda),
        "activation_checkpointing_kwargs": {"use_reentrant": False},
        "ddp_find_unused_parameters": False,
        "dataloader_num_workers": 0,
        "remove_unused_columns": True,
        "disable_tqdm": not stage.is_main,
        "save_only_model": False,
        **precision(stage.cuda),
    }


def _last(history: list[dict], key: str, step: int | None = None) -> float | None:
    for entry in reversed(history):
        if key in entry and (step is None or entry.get("step") == step):
            return entry[key]
    return None


class StageCallback(TrainerCallback):
    """Publishes checkpoints as ``checkpoint-<global step>``, logs metrics, stops at the deadline."""

    def __init__(self, stage: Stage):
        self.stage = stage

    def _global(self, step: int) -> int:
        return self.stage.offset + step

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.stage.max_steps = state.max_steps
        if model is not None:  # adapter + two fp32 Adam moments + tokenizer files, per checkpoint
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            checkpoints = state.max_steps // max(1, args.save_steps) + 1
            check_disk_space(self.stage.run_dir, checkpoints * (trainable * 12 + 20_000_000))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or self.stage.metrics is None:
            return
        event = {"step": self._global(state.global_step), "stage": self.stage.name, "stage_step": state.global_step,
                 "time": round(time.time(), 3)}
        event.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str))})
        self.stage.metrics.write(event)

    def on_step_end(self, args, state, control, **kwargs):
        if self.stage.deadline is not None and state.global_step < state.max_steps:
            if _agreed(time.time() >= self.stage.deadline):
                self.stage.out_of_time = True
                control.should_training_stop = True
                control.should_save = True
                control.should_evaluate = False  # the budget is spent: save now, leave scoring to the check engine
        # DefaultFlowCallback ran first: the trainer saves after this step, until on_save has published it
        self.stage.saving = state.global_step if control.should_save else None

    def on_save(self, args, state, control, **kwargs):
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # every rank has written its part of the checkpoint
        if state.is_world_process_zero:
            history = state.log_history
            metrics = {"loss": _last(history, "loss"), "learning_rate": _last(history, "learning_rate"),
                       "epoch": state.epoch}
            for key in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins", "eval_mean_token_accuracy"):
                value = _last(history, key, state.global_step)
                if value is not None:
                    metrics[key] = value
            meta = {"spec_hash": self.stage.spec_hash, "stage": self.stage.name, "stage_step": state.global_step,
                    "stage_final": state.global_step >= state.max_steps, "base_model": self.stage.base_model,
                    "init_from": self.stage.init_from, "metrics": {k: v for k, v in metrics.items() if v is not None}}
            trainer_dir = self.stage.staging / f"checkpoint-{state.global_step}"
            self.stage.saved.append(publish_checkpoint(self.stage.run_dir, trainer_dir, self._global(state.global_step), meta))
        self.stage.saving = None
        PartialState().wait_for_everyone()


def _agreed(flag: bool) -> bool:
    """The main process's ``flag`` on every process (ranks must stop at the same step)."""
    from behavio import distributed

    return bool(distributed.broadcast(flag))


def clear_staging(stage: Stage) -> None:
    """Remove half-written trainer checkpoints left by a crash (main process only)."""
    if stage.is_main:
        shutil.rmtree(stage.staging, ignore_errors=True)
    stage.staging.mkdir(parents=True, exist_ok=True)


def summary(stage: Stage, trainer, seconds: float) -> str:
    """One line: steps, time, s/step, first and last loss, eval loss, checkpoints."""
    history = trainer.state.log_history
    losses = [e["loss"] for e in history if "loss" in e]
    steps = trainer.state.global_step - (stage.resume.meta.get("stage_step", 0) if stage.resume else 0)
    parts = [f"{stage.name}: {trainer.state.global_step}/{stage.max_steps} steps"]
    if steps > 0:
        parts.append(f"{seconds:.0f}s ({seconds / steps:.2f} s/step)")
    if losses:
        parts.append(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    eval_loss = _last(history, "eval_loss")
    if eval_loss is not None:
        parts.append(f"eval_loss {eval_loss:.3f}")
    if stage.out_of_time:
        parts.append("stopped by max_minutes")
    if stage.saved:
        parts.append("saved " + ", ".join(p.name for p in stage.saved))
    return ", ".join(parts)


def run_trainer(stage: Stage, trainer) -> Path:
    """Train (resuming when the stage resumes), keep the metrics, print the summary; the final checkpoint's path."""
    start = time.time()
    try:
        output = trainer.train(resume_from_checkpoint=str(stage.resume.path) if stage.resume else None)
    except Exception as exc:
        if not disk_full(exc, stage.run_dir):
            raise
        raise DiskFull(abandon_save(stage, trainer.state.global_step)) from None
    stage.train_metrics, stage.history = output.metrics, trainer.state.log_history
    if stage.is_main:
        stage.say(summary(stage, trainer, time.time() - start))
    return stage.run_dir / f"checkpoint-{stage.offset + trainer.state.global_step}"


def abandon_save(stage: Stage, step: int) -> str:
    """After a failed write: what was being written; a checkpoint of ``step`` that was being saved is removed."""
    staged = stage.staging / f"checkpoint-{step}"
    target = stage.run_dir / f"checkpoint-{stage.offset + step}"
    renamed = target.is_dir() and target not in {c.path for c in complete_checkpoints(stage.run_dir)}
    if stage.saving != step and not (staged.exists() or renamed):
        return f"training {stage.name} (step {step}) in {stage.run_dir}"
    what = f"saving {target.name} ({stage.name} step {step})"
    if not (staged.exists() or renamed):
        return what
    if stage.is_main:
        shutil.rmtree(staged, ignore_errors=True)
        if renamed:  # moved out of .staging but behavio.json never completed
            shutil.rmtree(target, ignore_errors=True)
    return f"{what}; its half-written files were removed"
