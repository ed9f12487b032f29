"""What SFT and DPO share: the stage context, trainer arguments, the planned learning-rate schedule,
and the callback that publishes checkpoints under the global step, logs metrics and keeps the stage
on its plan (:mod:`behavio.train.budget`: how many steps fit, where checkpoints go, when to stop)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from transformers import TrainerCallback

from behavio.train.budget import CheckPlan, Clock, Schedule, StagePlan, StageTimer
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
    deadline: float | None = None         # clock() by which the stage must have saved its last checkpoint
    plan: StagePlan | None = None         # steps and checkpoints (made from the trainer's max_steps when None)
    check: CheckPlan | None = None        # the run's check reserve (grows when the stage gets checkpoints back)
    clock: Clock = time.monotonic
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
    steps_done: int = 0                                # the trainer's global step when it stopped
    history: list = field(default_factory=list)        # the trainer's log history
    schedule: Schedule | None = None                   # the learning-rate schedule over the planned steps

    @property
    def staging(self) -> Path:
        return staging_dir(self.run_dir, self.name)

    def outcome(self) -> str:
        """What the stage did: steps against the spec's, seconds per step."""
        plan, done = self.plan, self.steps_done
        if plan is None:
            return ""
        steps = f"{done} of {plan.full_steps} steps" if done < plan.full_steps else f"{done} steps"
        runtime = self.train_metrics.get("train_runtime")
        trained = done - (self.resume.meta.get("stage_step", 0) if self.resume else 0)
        return f"{steps}, {runtime / trained:.2f} s/step" if runtime and trained > 0 else steps

    def learning_rate_schedule(self) -> Schedule:
        """The stage's schedule (the plan's steps; set again once the trainer knows its max_steps)."""
        if self.schedule is None:
            self.schedule = Schedule(self.cfg.lr_scheduler, self.plan.steps if self.plan else 1, self.cfg.warmup_ratio)
        return self.schedule


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
        "save_strategy": "no",  # StageCallback saves and evaluates on the plan's checkpoints
        "eval_strategy": "no",
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
        **precision(cfg, stage.cuda),
    }


_PLANNED: dict[type, type] = {}


def planned(trainer_cls: type) -> type:
    """``trainer_cls`` whose learning-rate scheduler follows the stage's :class:`Schedule` (set ``trainer.stage``)."""
    if trainer_cls not in _PLANNED:
        def create_scheduler(self, num_training_steps: int, optimizer=None):
            if self.lr_scheduler is None:
                from torch.optim.lr_scheduler import LambdaLR

                self.lr_scheduler = LambdaLR(optimizer or self.optimizer, self.stage.learning_rate_schedule())
                self._created_lr_scheduler = True
            return self.lr_scheduler

        _PLANNED[trainer_cls] = type(f"Planned{trainer_cls.__name__}", (trainer_cls,),
                                     {"create_scheduler": create_scheduler, "__doc__": trainer_cls.__doc__})
    return _PLANNED[trainer_cls]


def _last(history: list[dict], key: str, step: int | None = None) -> float | None:
    for entry in reversed(history):
        if key in entry and (step is None or entry.get("step") == step):
            return entry[key]
    return None


class StageCallback(TrainerCallback):
    """Publishes checkpoints as ``checkpoint-<global step>``, logs metrics, keeps the stage on its plan."""

    def __init__(self, stage: Stage, evaluate: bool = False):
        self.stage = stage
        self.evaluate = evaluate
        self.timer: StageTimer | None = None
        self.mark = 0.0  # clock() when the last step ended (what follows it until the next step is not training)

    def _global(self, step: int) -> int:
        return self.stage.offset + step

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        stage = self.stage
        plan = stage.plan or StagePlan(stage.name, state.max_steps, state.max_steps, stage.cfg.save_steps, 0.0,
                                       args.num_train_epochs)
        plan.full_steps = state.max_steps  # the trainer's count is the authority (packing, processes)
        plan.steps = min(plan.steps, plan.full_steps)
        stage.plan = plan
        self.timer = StageTimer(plan, stage.learning_rate_schedule(), stage.deadline, stage.clock,
                                say=stage.say if stage.is_main else (lambda _: None), check=stage.check)
        self.timer.begin(state.global_step)
        stage.max_steps = plan.steps
        if model is not None:  # adapter + two fp32 Adam moments + tokenizer files, per checkpoint
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            check_disk_space(stage.run_dir, plan.checkpoints * (trainable * 12 + 20_000_000))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or self.stage.metrics is None:
            return
        event = {"step": self._global(state.global_step), "stage": self.stage.name, "stage_step": state.global_step,
                 "time": round(time.time(), 3)}
        event.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str))})
        self.stage.metrics.write(event)

    def on_step_end(self, args, state, control, **kwargs):
        decision = self.timer.step_end(state.global_step)
        save, stop, steps = _agreed((decision.save, decision.stop, self.timer.plan.steps))
        self.timer._apply(steps, state.global_step)  # every rank follows the main process's plan (and its learning rate)
        self.stage.max_steps = steps
        if stop and state.global_step < steps:
            self.stage.out_of_time = True
        control.should_save = control.should_save or save
        control.should_evaluate = self.evaluate and save and not self.stage.out_of_time
        control.should_training_stop = control.should_training_stop or stop
        # the trainer saves after this step, until on_save has published it
        self.stage.saving = state.global_step if control.should_save else None
        self.mark = self.stage.clock()

    def on_evaluate(self, args, state, control, **kwargs):
        self.mark = self.timer.pause_from(self.mark)

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
                    "stage_final": state.global_step >= self.stage.max_steps, "planned_steps": self.stage.max_steps,
                    "base_model": self.stage.base_model, "init_from": self.stage.init_from,
                    "metrics": {k: v for k, v in metrics.items() if v is not None}}
            trainer_dir = self.stage.staging / f"checkpoint-{state.global_step}"
            self.stage.saved.append(publish_checkpoint(self.stage.run_dir, trainer_dir, self._global(state.global_step), meta))
        self.stage.saving = None
        PartialState().wait_for_everyone()
        start = self.mark
        self.mark = self.timer.pause_from(self.mark)
        self.timer.saved(self.mark - start)


def _agreed(value):
    """The main process's ``value`` on every process (ranks must save, stop and schedule alike)."""
    from behavio import distributed

    return distributed.broadcast(value)


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
    stage.steps_done = trainer.state.global_step
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
