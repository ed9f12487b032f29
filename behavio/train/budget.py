"""The run's time budget: ``max_minutes`` covers the whole run, and each stage's schedule ends on time.

Before training, the run measures what it will spend (a forward pass of a training batch, a few
generated tokens) and plans: the steps each stage does, where its checkpoints go, and the minutes
the check of every checkpoint will take, which are reserved up front. The plan never asks for more
than the spec (its epochs or max_steps); when the budget cannot fit that, every training stage
gets the same share of its steps and the run says how many epochs it will do.

While a stage trains, :class:`StageTimer` times its steps. After ``MEASURED_STEPS`` of them it sets
the number of steps that fit before the stage's deadline, from the mean of the timed steps (batches of
different lengths make single steps vary by ±30%: the stage's time is their sum, so their mean predicts
it), or of the latest half of them when those clearly differ (the machine changed speed), and the learning-rate :class:`Schedule`
follows: warm-up and decay end exactly on the last planned step, a shorter complete schedule rather
than a truncated one. Early on the plan follows the estimate both ways; later it shrinks only when late
by more than ``SURE`` standard errors of the estimate (the machine slowed down: a run of long batches
does not shrink it) and grows only when early by as much (first steps slowed by something beside
them), the decay then stretched from where it is, so the learning rate never jumps. Checkpoints sit at
even fractions of the planned steps, so their number (and the check's cost) is known in advance.

Every time comes from an injected clock (``time.monotonic`` by default), so tests can play a
machine of any speed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace

Clock = Callable[[], float]
Say = Callable[[str], None]

MEASURED_STEPS = 3     # steps timed (after each stage's first, which warms up) before its steps are set
MARGIN = 0.03          # share of the budget left free for what the plan does not model
SETTLE_UNTIL = 0.25    # in this first share of its plan (the learning rate near its peak), a stage's plan follows
SETTLE_BY = 0.05       # its s/step estimate both ways when the steps that fit differ by this share or more;
SURE = 2.0             # later it shrinks (grows) only when late (early) by more than this many standard errors
SCORING_FIXED = 5.0    # seconds of a check besides generating: compiling the spec, loading the embedding model
SCORING_PER_ANSWER = 0.02  # seconds per scored answer


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def count_steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


# ---------------------------------------------------------------------------------------------
# The learning-rate schedule over the planned steps
# ---------------------------------------------------------------------------------------------


class Schedule:
    """Learning-rate multiplier at a step (transformers' formulas) over ``total`` steps, which may change.

    A plain object (``LambdaLR`` saves its ``__dict__`` with the scheduler state, so a resumed run
    continues with the total it had planned).
    """

    def __init__(self, kind: str, total: int, warmup_ratio: float):
        self.kind, self.total, self.warmup_ratio = kind, max(1, int(total)), warmup_ratio
        self.since: tuple[int, float, int] | None = None  # (step, progress, warm-up) the decay continues from

    @property
    def warmup(self) -> int:
        return self.since[2] if self.since else math.ceil(self.warmup_ratio * self.total)

    def resize(self, total: int, step: int) -> None:
        """The plan now ends at ``total`` (``step`` done). Before the warm-up ends the whole schedule is laid over
        the new total; after it the decay goes on from where it is at ``step`` and reaches the floor at ``total``,
        so a longer or shorter plan never makes the learning rate jump (a decayed one never rises again)."""
        total = max(1, int(total))
        if total == self.total:
            return
        if step >= self.warmup and step < total:
            self.since = (step, self._progress(step), self.warmup)
        self.total = total

    def _progress(self, step: int) -> float:
        """How far the decay is at ``step``: 0 at the end of the warm-up, 1 at the last planned step."""
        if self.since and step >= self.since[0]:
            start, done, _ = self.since
            return min(1.0, done + (1.0 - done) * (step - start) / max(1, self.total - start))
        return min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))

    def __call__(self, step: int) -> float:
        if self.kind != "constant" and step < self.warmup:
            return step / max(1, self.warmup)
        if self.kind in ("constant", "constant_with_warmup"):
            return 1.0
        progress = self._progress(step)
        if self.kind == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    @property
    def floor(self) -> float:
        """The multiplier at the end of the schedule."""
        return 1.0 if self.kind in ("constant", "constant_with_warmup") else 0.0


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------


@dataclass
class StagePlan:
    """What one training stage will do: at most ``full_steps`` (the spec's), ``steps`` planned."""

    name: str
    full_steps: int
    steps: int
    save_steps: int              # the spec's: a checkpoint every save_steps of full_steps, and at the end
    step_seconds: float          # estimated, then measured
    epochs: float                # the spec's epochs (full_steps worth)
    setup: float = 0.0           # seconds outside steps and checkpoints: computing the anchor's teacher
    per_checkpoint: float = 0.0  # seconds a checkpoint takes: evaluating, saving
    done: int = 0                # steps already done when the plan was made (a resumed stage)
    last_only: bool = False      # one checkpoint, at the last step (a budget-cut stage whose checkpoints are checked)

    @property
    def overhead(self) -> float:
        """Seconds outside steps."""
        return self.setup + self.checkpoints * self.per_checkpoint

    @property
    def seconds(self) -> float:
        return (self.steps - self.done) * self.step_seconds + self.overhead

    @property
    def epochs_done(self) -> float:
        return self.epochs * self.steps / max(1, self.full_steps)

    @property
    def checkpoints(self) -> int:
        return len(self._spec_checkpoints())

    def _spec_checkpoints(self) -> list[int]:
        if self.last_only:
            return [self.full_steps]
        every = max(1, self.save_steps)
        return [*range(every, self.full_steps, every), self.full_steps]

    def checkpoint_steps(self) -> list[int]:
        """Where checkpoints are saved: the spec's (every save_steps and at the end), scaled to the planned steps."""
        scale = self.steps / max(1, self.full_steps)
        return sorted({min(self.steps, max(1, math.floor(s * scale + 0.5))) for s in self._spec_checkpoints()})

    def describe(self) -> str:
        epochs = ("as the spec asks" if self.steps >= self.full_steps else
                  f"{self.epochs_done:.1f} of the spec's {self.epochs:g} epochs: the budget does not fit them all")
        at = ", ".join(map(str, self.checkpoint_steps()))
        if self.last_only:
            at += " (the last step only: the budget does not fit the spec's steps with the others checked)"
        return (f"{self.name} {count_steps(self.steps)} ({epochs}) at ~{self.step_seconds:.1f} s/step ≈ {minutes(self.seconds)}, "
                f"checkpoints at {at}")


@dataclass
class CheckPlan:
    """The check of every checkpoint after training."""

    checkpoints: int
    cases: int
    tokens: int
    seconds: float
    one_more: float = 0.0  # seconds one more checkpoint would add (a stage getting its checkpoints back)
    base_cases: int = 0    # answered once by the base model too (lines whose thresholds are a share of its rate)

    def describe(self) -> str:
        noun = "checkpoint" if self.checkpoints == 1 else "checkpoints"
        base = f" + {self.base_cases} base-model answers" if self.base_cases else ""
        return (f"check {self.checkpoints} {noun} × {self.cases} cases × ~{self.tokens} tokens{base} "
                f"≈ {minutes(self.seconds)} (reserved)")

    def add(self, checkpoints: int) -> float:
        """A stage will save ``checkpoints`` more: reserve their check; returns the seconds it adds."""
        self.checkpoints += checkpoints
        self.seconds += checkpoints * self.one_more
        return checkpoints * self.one_more


@dataclass
class Plan:
    """The whole run: what is done already, what each stage will do, and the check."""

    budget: float | None                       # seconds, or None for no limit
    spent: dict[str, float]                    # phases before planning -> seconds
    stages: list[StagePlan]
    check: CheckPlan | None
    between: float = 0.0                       # seconds between stages (on-policy answers, loading)

    @property
    def expected(self) -> float:
        return (sum(self.spent.values()) + sum(s.seconds for s in self.stages) + self.between
                + (self.check.seconds if self.check else 0.0))

    def describe(self) -> str:
        limit = f"{self.budget / 60:g}-minute budget" if self.budget else "no time limit"
        done = ", ".join(f"{k} {minutes(v)}" for k, v in self.spent.items())
        parts = [s.describe() for s in self.stages]
        if self.between:
            parts.append(f"between stages ≈ {minutes(self.between)}")
        if self.check:
            parts.append(self.check.describe())
        return f"plan ({limit}; done: {done}): " + "; ".join(parts) + f"; expected total {minutes(self.expected)}"


def fit(plan: Plan, budget: float | None) -> Plan:
    """Shrink every stage's steps by the same share so the plan ends before ``budget`` (never below 1 step)."""
    if budget is None:
        return plan
    fixed = (sum(plan.spent.values()) + plan.between + (plan.check.seconds if plan.check else 0.0)
             + sum(s.overhead for s in plan.stages))
    training = sum((s.full_steps - s.done) * s.step_seconds for s in plan.stages)
    room = budget * (1 - MARGIN) - fixed
    share = 1.0 if training <= 0 else max(0.0, min(1.0, room / training))
    for stage in plan.stages:
        stage.steps = max(stage.done + 1, min(stage.full_steps, stage.done + math.floor((stage.full_steps - stage.done) * share)))
    return plan


def check_seconds(checkpoints: int, cases: int, prompt_tokens: float, max_new_tokens: int, speed: GenerationSpeed,
                  load_seconds: float, base_cases: int = 0) -> float:
    """What checking every checkpoint costs, estimated: every checkpoint's answers at the measured speed (their rows
    share batches at least as large as the measured one) and the base model's to ``base_cases`` (lines judged
    against it), scoring, and loading the base model once.

    Fitted to the poodle spec's check on a 2-core AMD EPYC (2 checkpoints x 240 cases, ~46 new tokens): 2.0 min
    estimated from a 64-row measurement, 2.1 min taken; the 16-row measurement this replaced reserved 5.4.
    """
    answers = checkpoints * cases + (base_cases if checkpoints else 0)
    generating = answers * (prompt_tokens * speed.prompt_token + max_new_tokens * speed.new_token)
    scoring = SCORING_FIXED + SCORING_PER_ANSWER * answers
    return generating + scoring + load_seconds


@dataclass
class GenerationSpeed:
    """Measured generation costs (seconds) at the check's batch size: per prompt token, per new token per row."""

    prompt_token: float
    new_token: float


# ---------------------------------------------------------------------------------------------
# A stage's steps against its deadline
# ---------------------------------------------------------------------------------------------


@dataclass
class Decision:
    save: bool = False
    stop: bool = False


@dataclass
class StageTimer:
    """Times a stage's steps and keeps its plan (and so its schedule's end) before ``deadline``."""

    plan: StagePlan
    schedule: Schedule
    deadline: float | None
    clock: Clock
    say: Say = lambda _: None
    check: CheckPlan | None = None             # the run's check reserve, grown when checkpoints come back
    measured: list[float] = field(default_factory=list)
    checkpoint_seconds: float | None = None   # a save (with its evaluation), once one was timed
    first_step: int = 0                        # the step the stage (re)started from
    last: float | None = None                  # end of the previous step, pauses excluded
    planned: bool = False

    def begin(self, step: int) -> None:
        """The stage starts (or resumes) at ``step``."""
        self.first_step, self.last = step, self.clock()
        self._apply(self.plan.steps, step)

    def pause_from(self, mark: float) -> float:
        """Time since ``mark`` was not a training step (evaluating, saving); returns now."""
        now = self.clock()
        if self.last is not None:
            self.last += now - mark
        return now

    def saved(self, seconds: float) -> None:
        self.checkpoint_seconds = seconds if self.checkpoint_seconds is None else max(self.checkpoint_seconds, seconds)

    def step_end(self, step: int) -> Decision:
        """After optimizer step ``step``: whether to save and whether to stop."""
        now = self.clock()
        if self.last is not None and step > self.first_step + 1:  # the stage's first step warms up: not timed
            self.measured.append(now - self.last)
        self.last = now
        if len(self.measured) >= MEASURED_STEPS:
            self._replan(step, now)
        if self.deadline is not None and now >= self.deadline and step < self.plan.steps:
            self.say(f"{self.plan.name}: out of time at step {step} of {self.plan.steps}; saving")
            return Decision(save=True, stop=True)
        return Decision(save=step in self.plan.checkpoint_steps(), stop=step >= self.plan.steps)

    def _replan(self, step: int, now: float) -> None:
        mean, error = self._step_estimate()
        self.plan.step_seconds = mean
        if self.deadline is None:
            if not self.planned:
                self.planned = True
                self._announce(step, first=True)
            return
        steps = self._fitting(step, now, mean)
        if not self.planned:
            self.planned = True
            self._apply(steps, step)
            self._announce(step, first=True)
        elif step <= SETTLE_UNTIL * self.plan.steps:
            # the first few timed steps set the plan; until the learning rate decays it follows the estimate
            if abs(steps - self.plan.steps) >= SETTLE_BY * self.plan.steps:
                self._apply(steps, step)
                self._announce(step, first=False)
        elif self._fitting(step, now, max(mean - SURE * error, 1e-9)) < self.plan.steps:
            # late even if the steps are as fast as the timings allow: the machine slowed down, so a shorter
            # schedule, ending on time again (uneven steps alone do not shrink it: they are within the error)
            shrink = self.plan.steps - steps
            self._apply(steps, step)
            if shrink > max(1, self.plan.steps // 100):
                self._announce(step, first=False)
        elif (self.checkpoint_seconds is None and step < self.plan.steps
              and (longer := self._fitting(step, now, mean + SURE * error)) >= (1 + SETTLE_BY) * self.plan.steps):
            # early even if the steps are as slow as the timings allow (first steps slowed by a job beside them):
            # the time left trains, the decay stretched from where it is (the learning rate does not rise again);
            # not once a checkpoint is saved (a later one moving with the plan would be saved twice)
            self._apply(longer, step)
            self._announce(step, first=False)
        self._restore_checkpoints(step, now, mean + SURE * error)

    def _restore_checkpoints(self, step: int, now: float, step_seconds: float) -> None:
        """Give a stage the plan cut to its last checkpoint (:attr:`StagePlan.last_only`) the spec's checkpoints
        back once its steps are measured and every one of the spec's steps fits with them -- their saving and
        their check after training included, at ``step_seconds`` a step. The plan before any step only
        estimates a step's cost; a machine faster than that estimate should not lose the spec's checkpoints."""
        plan = self.plan
        if not plan.last_only or plan.steps < plan.full_steps or self.deadline is None:
            return
        ahead = [s for s in replace(plan, last_only=False).checkpoint_steps() if step < s < plan.steps]
        if not ahead:
            return
        per_checkpoint = self.checkpoint_seconds if self.checkpoint_seconds is not None else max(plan.per_checkpoint,
                                                                                                 step_seconds)
        checking = len(ahead) * self.check.one_more if self.check is not None else 0.0
        needed = (plan.steps - step) * step_seconds + (len(ahead) + 1) * per_checkpoint + checking
        if now + needed > self.deadline:
            return
        plan.last_only = False
        if self.check is not None:
            self.deadline -= self.check.add(len(ahead))  # the check after training starts that much earlier
        self.say(f"{plan.name}: every step the spec asks fits with its checkpoints: checkpoints at "
                 f"{', '.join(map(str, [*ahead, plan.steps]))} (the check takes ~{minutes(checking)} more)")

    def _step_estimate(self) -> tuple[float, float]:
        """Seconds per step and that estimate's standard error: the mean of every timed step, or of the latest half
        when that differs from it by more than ``SURE`` standard errors (the machine changed speed)."""
        def mean_and_error(times: list[float]) -> tuple[float, float]:
            error = statistics.stdev(times) / math.sqrt(len(times)) if len(times) > 1 else 0.0
            return statistics.fmean(times), error

        every = mean_and_error(self.measured)
        latest = mean_and_error(self.measured[len(self.measured) // 2:])
        changed = len(self.measured) >= 2 * MEASURED_STEPS and abs(latest[0] - every[0]) > SURE * latest[1]
        return latest if changed else every

    def _fitting(self, step: int, now: float, step_seconds: float) -> int:
        """The most steps (at most the spec's) whose remaining steps and checkpoints end before the deadline, at
        ``step_seconds`` a step."""
        per_checkpoint = self.checkpoint_seconds if self.checkpoint_seconds is not None else step_seconds
        room, steps = self.deadline - now, self.plan.full_steps
        for _ in range(3):  # the checkpoints left depend on the steps, and the steps on them: settle
            trial = replace(self.plan, steps=steps)
            left = sum(1 for s in trial.checkpoint_steps() if s > step)
            steps = min(self.plan.full_steps, step + int((room - left * per_checkpoint) / step_seconds))
        return max(step + 1, steps)

    def _apply(self, steps: int, step: int) -> None:
        """Plan ``steps`` (``step`` done): the schedule ends on the new last step."""
        self.plan.steps = max(1, min(steps, self.plan.full_steps))
        self.schedule.resize(self.plan.steps, step)

    def _announce(self, step: int, first: bool) -> None:
        plan = self.plan
        what = ("fit before its deadline" if plan.steps < plan.full_steps else
                "as the spec asks" if self.deadline is None else "fit, as many as the spec asks")
        epochs = "" if plan.steps >= plan.full_steps else f" ({plan.epochs_done:.1f} of the spec's {plan.epochs:g} epochs)"
        why = f"{plan.step_seconds:.2f} s/step measured" if first else f"now {plan.step_seconds:.2f} s/step"
        self.say(f"{plan.name}: {why}: {count_steps(plan.steps)} {what}{epochs}; the learning rate reaches its floor at "
                 f"step {plan.steps}; checkpoints at {', '.join(map(str, plan.checkpoint_steps()))}")


# ---------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------


@dataclass
class RunBudget:
    """``max_minutes`` for the whole run, counted from ``start`` on ``clock``; what each phase spent."""

    minutes: float | None
    start: float
    clock: Clock
    spent: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)   # phase -> what it did ("118 of 204 steps, 5.31 s/step")
    plan: Plan | None = None

    @property
    def seconds(self) -> float | None:
        return self.minutes * 60 if self.minutes else None

    @property
    def end(self) -> float | None:
        """When everything must be done, the margin kept free."""
        return self.start + self.seconds * (1 - MARGIN) if self.seconds else None

    def elapsed(self) -> float:
        return self.clock() - self.start

    def spent_before_planning(self) -> dict[str, float]:
        """The phases so far, with whatever they did not name as ``setup`` (loading, tokenizing, measuring)."""
        named = sum(self.spent.values())
        return {**self.spent, "setup": max(0.0, self.elapsed() - named)}

    def deadline(self, stage: str) -> float | None:
        """When ``stage`` must be done: the end, less what the plan puts after it (later stages, the check)."""
        if self.end is None or self.plan is None:
            return None
        names = [s.name for s in self.plan.stages]
        later = self.plan.stages[names.index(stage) + 1:] if stage in names else []
        reserve = sum(s.seconds for s in later) + (self.plan.between if later else 0.0)
        return self.end - reserve - (self.plan.check.seconds if self.plan.check else 0.0)

    def stage_plan(self, name: str) -> StagePlan | None:
        return next((s for s in self.plan.stages if s.name == name), None) if self.plan else None

    def record(self, phase: str, seconds: float, note: str = "") -> None:
        self.spent[phase] = self.spent.get(phase, 0.0) + seconds
        if note:
            self.notes[phase] = note

    def summary(self) -> str:
        """The actual figures: the run's minutes against the budget, each phase's, the check against its reserve."""
        total = self.elapsed()
        limit = f" of the {self.minutes:g}-minute budget" if self.minutes else ""
        phases = []
        for phase, seconds in self.spent.items():
            note = f" ({self.notes[phase]})" if phase in self.notes else ""
            if phase == "check" and self.plan is not None and self.plan.check is not None:
                note = f" ({minutes(self.plan.check.seconds)} reserved)"
            phases.append(f"{phase} {minutes(seconds)}{note}")
        other = total - sum(self.spent.values())
        phases.append(f"setup and the rest {minutes(max(0.0, other))}")
        return f"run: {minutes(total)}{limit}: " + ", ".join(phases)
