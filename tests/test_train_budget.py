"""The time budget (behavio/train/budget.py, plan.py): the schedule over planned steps, checkpoints
on the plan, the check reserved before training, and stages that end on time on a machine of any
speed -- all with an injected clock, no timed assertions."""

from __future__ import annotations

import json
import math
import random
import re
import statistics
from types import SimpleNamespace

import pytest
import torch

from behavio.train.budget import (MARGIN, MEASURED_STEPS, SCORING_FIXED, SCORING_PER_ANSWER, CheckPlan,
                                  GenerationSpeed, Plan, RunBudget, Schedule, StagePlan, StageTimer, check_seconds, fit)
from behavio.train.plan import STEP_VS_FORWARD


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ---------------------------------------------------------------- the schedule


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant_with_warmup", "constant"])
def test_the_schedule_is_transformers_one_over_the_planned_steps(kind):
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    theirs = get_scheduler(kind, optimizer, num_warmup_steps=math.ceil(0.1 * 40), num_training_steps=40)
    ours = Schedule(kind, 40, 0.1)
    for step in range(41):
        assert ours(step) == pytest.approx(theirs.lr_lambdas[0](step), abs=1e-12), step
    assert ours(40) == ours.floor


def test_a_replanned_schedule_warms_up_and_decays_over_the_new_total():
    schedule = Schedule("cosine", 200, 0.05)
    assert schedule.warmup == 10
    schedule.total = 120  # a slower machine: fewer steps, the whole schedule still
    assert schedule.warmup == 6 and schedule(6) == 1.0 and schedule(120) == 0.0 and 0 < schedule(119) < 0.001


# ---------------------------------------------------------------- the plan


def test_checkpoints_sit_where_the_spec_puts_them_scaled_to_the_planned_steps():
    plan = StagePlan("sft", full_steps=204, steps=204, save_steps=50, step_seconds=1.0, epochs=6)
    assert plan.checkpoint_steps() == [50, 100, 150, 200, 204] and plan.checkpoints == 5
    plan.steps = 102
    assert plan.checkpoint_steps() == [25, 50, 75, 100, 102]
    plan = StagePlan("sft", full_steps=204, steps=120, save_steps=102, step_seconds=1.0, epochs=6)
    assert plan.checkpoint_steps() == [60, 120] and plan.checkpoints == 2


def _plan(sft_full=200, sft_s=1.0, dpo_full=0, check_s=60.0, spent=30.0) -> Plan:
    stages = [StagePlan("sft", sft_full, sft_full, 100, sft_s, 4.0)]
    if dpo_full:
        stages.append(StagePlan("dpo", dpo_full, dpo_full, 100, 4 * sft_s, 1.0))
    return Plan(None, {"fill": spent}, stages, CheckPlan(2, 100, 80, check_s))


def test_fit_keeps_what_fits_and_shrinks_every_stage_alike_when_it_does_not():
    assert [s.steps for s in fit(_plan(dpo_full=20), 10_000).stages] == [200, 20]
    budget = (30 + 60 + 0.5 * (200 + 80)) / (1 - MARGIN)
    plan = fit(_plan(dpo_full=20), budget)
    sft, dpo = plan.stages
    assert sft.steps == 100 and dpo.steps == 10
    assert "sft 100 steps (2.0 of the spec's 4 epochs" in plan.describe() and plan.expected <= budget
    assert fit(_plan(), 1.0).stages[0].steps == 1  # nothing fits: one step, still a complete schedule


def test_the_check_is_reserved_from_its_size_and_the_measured_speed():
    speed = GenerationSpeed(prompt_token=0.003, new_token=0.007)
    one = check_seconds(2, 180, 32, 80, speed, load_seconds=2.0)
    assert check_seconds(4, 180, 32, 80, speed, 2.0) > one  # more checkpoints
    assert check_seconds(2, 360, 32, 80, speed, 2.0) > one  # more cases
    assert check_seconds(2, 180, 32, 160, speed, 2.0) > one  # more tokens
    fixed = 2.0 + SCORING_FIXED + SCORING_PER_ANSWER * 360  # loading and scoring
    slower = check_seconds(2, 180, 32, 80, GenerationSpeed(0.006, 0.014), 2.0)
    assert slower - fixed == pytest.approx(2 * (one - fixed))  # a twice slower machine: twice the generating
    four = check_seconds(4, 180, 32, 80, speed, 2.0) - (2.0 + SCORING_FIXED + SCORING_PER_ANSWER * 720)
    assert four == pytest.approx(2 * (one - fixed)) == pytest.approx(360 * (32 * 0.003 + 80 * 0.007) * 2)
    budget = RunBudget(14, start=0.0, clock=FakeClock(0.0))
    budget.plan = _plan(check_s=one)
    assert budget.deadline("sft") == pytest.approx(14 * 60 * (1 - MARGIN) - one)  # the check comes out of the training time


# ---------------------------------------------------------------- a stage against its deadline


def _train(timer: StageTimer, clock: FakeClock, seconds_per_step, save_seconds: float = 0.0) -> list[int]:
    """Play a trainer: step, ask the timer, save when told; returns the steps saved."""
    saved, step = [], 0
    timer.begin(0)
    while True:
        step += 1
        clock.advance(seconds_per_step(step))
        decision = timer.step_end(step)
        if decision.save:
            mark = clock()
            clock.advance(save_seconds)
            timer.pause_from(mark)
            timer.saved(save_seconds)
            saved.append(step)
        if decision.stop:
            return saved


def _stage(full_steps: int, save_steps: int, epochs: int, kind: str, warmup: float, budget: float, seconds_per_step,
           save_seconds: float = 0.0):
    """A stage of ``full_steps`` at an estimated 1 s/step, its deadline ``budget`` seconds away, trained with steps
    of ``seconds_per_step(step)``: (plan, schedule, steps saved, whether it ended on time, what it said)."""
    clock = FakeClock()
    plan = StagePlan("sft", full_steps=full_steps, steps=full_steps, save_steps=save_steps, step_seconds=1.0,
                     epochs=epochs)
    schedule = Schedule(kind, full_steps, warmup)
    deadline = clock() + budget
    said: list[str] = []
    saved = _train(StageTimer(plan, schedule, deadline, clock, say=said.append), clock, seconds_per_step, save_seconds)
    return plan, schedule, saved, clock() <= deadline, said


def test_a_machine_twice_as_slow_does_fewer_steps_and_ends_its_schedule_at_the_floor_within_budget():
    results = {}
    for name, step_seconds in {"tuned": 1.0, "half speed": 2.0}.items():
        plan, schedule, saved, on_time, said = _stage(200, 100, 4, "cosine", 0.05, 230, lambda _, s=step_seconds: s,
                                                      save_seconds=3.0)
        results[name] = (plan.steps, saved, on_time, schedule(plan.steps), schedule.total)
    assert results["tuned"] == (200, [100, 200], True, 0.0, 200)  # everything fits: the spec's plan as is
    steps, saved, on_time, last_lr, total = results["half speed"]
    assert 100 < steps < 115 and on_time and last_lr == 0.0 and total == steps
    assert saved == [round(steps / 2 + 0.1), steps]  # the checkpoints moved with the plan
    announced = re.search(r"sft: 2.00 s/step measured: (\d+) steps fit before its deadline \((\d.\d) of the spec's 4 "
                          r"epochs\); the learning rate reaches its floor at step \1", said[-1])
    assert announced and steps - 1 <= int(announced[1]) <= steps + 1  # a 1-step trim later is not announced


def test_a_machine_that_slows_down_midway_replans_again_and_still_ends_on_time():
    plan, schedule, _, on_time, said = _stage(300, 300, 3, "linear", 0.1, 250, lambda step: 0.5 if step < 100 else 1.5)
    assert on_time and schedule(plan.steps) == 0.0 and plan.steps < 300
    speeds = [float(m[1]) for s in said if (m := re.search(r"now (\d\.\d\d) s/step", s))]
    assert sum("measured" in s for s in said) == 1 and max(speeds) > 1.25  # it said the steps got slower


def _lr_trace(timer: StageTimer, schedule: Schedule) -> list[float]:
    """The multiplier the trainer uses after every step (recorded as the timer answers it)."""
    trace, step_end = [], timer.step_end

    def recording(step: int):
        decision = step_end(step)
        trace.append(schedule(step))
        return decision
    timer.step_end = recording
    return trace


def test_steps_that_turn_out_faster_lengthen_the_plan_early_or_late_and_the_learning_rate_never_rises_again():
    """The first timed steps are often the slowest (caches warming up, a job beside them): when the stage then runs
    faster the time left goes to more steps. While the learning rate is near its peak the plan follows the mean;
    later it grows only when early beyond the estimate's error, and the decay stretches from where it is: the
    multiplier never rises after the warm-up, and the stage ends on time with it at its floor either way."""
    outcomes = {}
    for name, speed_up_at in {"early": 10, "late": 100}.items():
        clock = FakeClock()
        plan = StagePlan("sft", full_steps=400, steps=400, save_steps=400, step_seconds=1.0, epochs=3)
        schedule = Schedule("cosine", 400, 0.05)
        deadline, said = clock() + 300, []
        timer = StageTimer(plan, schedule, deadline, clock, say=said.append)
        trace = _lr_trace(timer, schedule)
        _train(timer, clock, lambda step, at=speed_up_at: 2.0 if step < at else 1.0)
        outcomes[name] = (plan.steps, clock() <= deadline, trace, said)
    for name, (steps, on_time, trace, said) in outcomes.items():
        assert on_time and trace[-1] == 0.0 and len(trace) == steps, name
        peak = trace.index(max(trace))
        assert all(b <= a + 1e-12 for a, b in zip(trace[peak:], trace[peak + 1:])), name  # decays, never rises
        planned = [int(m[1]) for s in said if (m := re.search(r"s/step(?: measured)?: (\d+) steps", s))]
        assert planned[0] < 160 and steps > planned[0] * 1.2, name  # set at 2 s/step, lengthened once faster
    assert 250 < outcomes["early"][0] <= 300
    assert 170 < outcomes["late"][0] <= 200  # 100 steps at 2 s, then at most the 100 s left at 1 s/step


def test_a_stretched_schedule_continues_its_decay_from_where_it_is():
    schedule = Schedule("cosine", 100, 0.1)
    before = schedule(60)
    schedule.resize(150, 60)  # 90 more steps instead of 40
    assert schedule.warmup == 10 and schedule(60) == pytest.approx(before)
    assert before > schedule(61) > schedule(100) > schedule(149) > schedule(150) == 0.0
    at = schedule(80)
    schedule.resize(120, 80)  # and shorter again: still no jump
    assert schedule(80) == pytest.approx(at) and at > schedule(81) and schedule(120) == 0.0 and 0 < schedule(119)
    early = Schedule("linear", 100, 0.1)
    early.resize(200, 5)  # still warming up: the whole schedule is laid over the new total
    assert early.warmup == 20 and early(20) == 1.0 and early(200) == 0.0


def test_steps_of_uneven_length_do_not_ratchet_the_plan_down():
    """Batches of different lengths make steps vary around their mean (here 1-3 s, mean 2 s): the plan follows the
    mean, so it neither shrinks on a run of long batches (and, late, cannot grow back) nor keeps re-announcing."""
    lengths = random.Random(0)
    seconds = [lengths.uniform(1.0, 3.0) for _ in range(400)]
    plan, schedule, _, on_time, said = _stage(400, 400, 3, "cosine", 0.05, 400, lambda step: seconds[step])
    fitting = 400 / statistics.fmean(seconds[1:plan.steps + 1])  # what fit, known afterwards (193 steps)
    assert on_time and schedule(plan.steps) == 0.0
    assert plan.steps >= 0.9 * fitting  # the median of the latest 6 steps shrank it to 161
    assert len(said) <= 5


def test_the_steps_are_set_after_a_few_measured_steps_not_before():
    clock = FakeClock()
    plan = StagePlan("sft", full_steps=100, steps=100, save_steps=100, step_seconds=0.1, epochs=1)
    timer = StageTimer(plan, Schedule("cosine", 100, 0.0), clock() + 50, clock)
    timer.begin(0)
    for step in range(1, MEASURED_STEPS + 1):  # the first step warms up and is not timed
        clock.advance(1.0)
        timer.step_end(step)
        assert plan.steps == 100
    clock.advance(1.0)
    timer.step_end(MEASURED_STEPS + 1)
    assert plan.steps == MEASURED_STEPS + 1 + int((50 - (MEASURED_STEPS + 1) - 1.0) / 1.0)


def test_without_a_budget_the_spec_decides_alone():
    clock = FakeClock()
    plan = StagePlan("sft", full_steps=40, steps=40, save_steps=20, step_seconds=0.1, epochs=1)
    timer = StageTimer(plan, Schedule("cosine", 40, 0.1), None, clock)
    assert _train(timer, clock, lambda _: 100.0) == [20, 40] and plan.steps == 40


def test_the_check_is_reserved_for_answers_as_long_as_the_trained_ones_not_the_whole_token_budget():
    """A trained model writes answers like its training answers and stops: the reserve counts those tokens
    (the long ones: a batch runs until its longest rows end), capped by the check's max_new_tokens."""
    from behavio.train.plan import CheckWork, answer_tokens, make_plan
    from behavio.train.config import TrainConfig

    features = [{"labels": [-100] * 30 + [1] * n} for n in [10] * 8 + [30, 60]]
    assert answer_tokens(features) == 60 and answer_tokens(features, quantile=0.5) == 10
    assert answer_tokens([]) is None
    assert CheckWork([[1]], 80, 32, answer_tokens=30).new_tokens() == 31  # the answer and its stop token
    assert CheckWork([[1]], 80, 32, answer_tokens=200).new_tokens() == 80  # never past max_new_tokens
    assert CheckWork([[1]], 80, 32).new_tokens() == 80  # unknown: the whole budget
    speed = GenerationSpeed(prompt_token=0.003, new_token=0.007)

    def reserved(answers):
        work = CheckWork([[1] * 40] * 100, 80, 32, answer_tokens=answers)
        plan = make_plan(TrainConfig(), budget=None, spent={}, sft_rows=64, sft_done=0, dpo_pairs=None,
                         on_policy_prompts=0, prompt_tokens=40, forward=0.5, speed=speed, load_seconds=2.0,
                         work=work, eval_rows=0)
        return plan.check
    short, unknown = reserved(24), reserved(None)
    assert short.tokens == 25 and unknown.tokens == 80
    assert short.seconds < unknown.seconds
    assert short.seconds == pytest.approx(check_seconds(short.checkpoints, 100, 40, 25, speed, 2.0))


def test_the_check_reserves_the_base_models_answers_to_lines_judged_against_it():
    """Lines whose thresholds are a share of the base model's rate (`of_base`) have their cases answered once by the
    base model too: the reserve counts those answers, once, and the plan says so."""
    from behavio.train.plan import CheckWork, make_plan
    from behavio.train.config import TrainConfig

    speed = GenerationSpeed(prompt_token=0.003, new_token=0.007)
    assert check_seconds(2, 100, 40, 25, speed, 2.0, base_cases=30) == pytest.approx(
        check_seconds(2, 100, 40, 25, speed, 2.0) + 30 * (40 * 0.003 + 25 * 0.007) + 30 * SCORING_PER_ANSWER)

    def reserved(base_cases):
        work = CheckWork([[1] * 40] * 100, 80, 32, answer_tokens=24, base_cases=base_cases)
        return make_plan(TrainConfig(), budget=None, spent={}, sft_rows=64, sft_done=0, dpo_pairs=None,
                         on_policy_prompts=0, prompt_tokens=40, forward=0.5, speed=speed, load_seconds=2.0,
                         work=work, eval_rows=0).check
    plain, judged = reserved(0), reserved(30)
    assert judged.seconds == pytest.approx(plain.seconds + 30 * (40 * 0.003 + 25 * 0.007 + SCORING_PER_ANSWER))
    assert judged.one_more == pytest.approx(plain.one_more)  # one more checkpoint adds no base answers
    assert "+ 30 base-model answers" in judged.describe() and "base-model" not in plain.describe()



def test_the_generation_speed_is_timed_on_a_check_sized_batch_after_a_warm_up(monkeypatch):
    """A machine where a decode costs 0.002 s per prompt token and 0.005 s per new row-token, plus 1 s on its first
    call (warming up): the measurement recovers both costs, on at most SPEED_ROWS rows of the check's prompts."""
    import behavio.decode
    from behavio.train.plan import SPEED_ROWS, CheckWork, generation_speed

    clock, calls = FakeClock(), []

    def decode_batch(model, rows, *, max_new_tokens, stop_ids, pad_id):
        calls.append(len(rows))
        clock.advance((1.0 if len(calls) == 1 else 0.0) + sum(len(r.prompt) for r in rows) * 0.002
                      + len(rows) * (max_new_tokens - 1) * 0.005)

    monkeypatch.setattr(behavio.decode, "decode_batch", decode_batch)
    model = torch.nn.Linear(1, 1)
    work = CheckWork([[1] * 30] * 100, 80, 64)
    speed = generation_speed(model, SimpleNamespace(pad_token_id=0, eos_token_id=2), work, clock)
    assert speed.prompt_token == pytest.approx(0.002) and speed.new_token == pytest.approx(0.005)
    assert calls[1:] == [min(64, SPEED_ROWS)] * 2 and model.training


def test_a_stage_the_budget_cuts_keeps_only_its_last_checkpoint_and_the_check_time_goes_to_steps():
    """Checking a checkpoint costs what tens of steps do; when the budget cannot fit the spec's steps, the
    stage saves (and the check scores) only its last checkpoint, and what the other would have cost trains."""
    from behavio.train.config import TrainConfig
    from behavio.train.plan import CheckWork, make_plan

    speed = GenerationSpeed(prompt_token=0.003, new_token=0.007)

    def planned(budget, prompts=200):
        work = CheckWork([[1] * 40] * prompts, 80, 32, answer_tokens=40)
        return make_plan(TrainConfig(epochs=3, save_steps=50), budget=budget, spent={"fill": 5.0}, sft_rows=800,
                         sft_done=0, dpo_pairs=None, on_policy_prompts=0, prompt_tokens=40, forward=0.5, speed=speed,
                         load_seconds=2.0, work=work, eval_rows=0)

    roomy = planned(None)
    stage = roomy.stages[0]
    assert stage.steps == stage.full_steps == 300 and stage.checkpoint_steps() == [50, 100, 150, 200, 250, 300]
    assert roomy.check.checkpoints == 6
    limit = 450.0
    tight = planned(limit)
    stage = tight.stages[0]
    assert stage.steps < stage.full_steps and stage.checkpoint_steps() == [stage.steps] and tight.check.checkpoints == 1
    assert ("(the last step only: the budget does not fit the spec's steps with the others checked); check 1 "
            "checkpoint × 200 cases") in tight.describe()
    assert tight.expected <= limit
    one_check = check_seconds(1, 200, 40, 41, speed, 2.0)
    six_checks = check_seconds(6, 200, 40, 41, speed, 2.0)
    step = STEP_VS_FORWARD * 0.5  # the estimated step from the 0.5 s forward pass
    assert stage.steps >= int((limit * (1 - MARGIN) - 5.0 - one_check - stage.overhead) / step)
    assert stage.steps > int((limit * (1 - MARGIN) - 5.0 - six_checks - stage.overhead) / step)
    # should the steps turn out faster, one more checkpoint costs the check what the plan says it does
    assert tight.check.one_more == pytest.approx(check_seconds(2, 200, 40, 41, speed, 2.0) - one_check)
    # every step fits when only the last checkpoint is checked: all the steps, that checkpoint alone
    roomier = planned(600.0).stages[0]
    assert roomier.steps == roomier.full_steps and roomier.checkpoint_steps() == [300]
    uncheck = planned(600.0, prompts=0)  # nothing to check: the checkpoints cost only their saving
    assert uncheck.check is None and len(uncheck.stages[0].checkpoint_steps()) > 1


def _cut_stage(deadline_after: float):
    """A stage the plan cut to 150 of its 200 steps and its last checkpoint (a step estimated at 1.5 s), trained at
    1.0 s a step with 3-s saves: (steps saved, the check reserve, when training ended, the deadline, what it said)."""
    clock = FakeClock()
    plan = StagePlan("sft", full_steps=200, steps=150, save_steps=100, step_seconds=1.5, epochs=3, last_only=True)
    check = CheckPlan(1, 100, 40, 60.0, one_more=30.0)
    said: list[str] = []
    deadline = clock() + deadline_after
    timer = StageTimer(plan, Schedule("cosine", 150, 0.05), deadline, clock, say=said.append, check=check)
    saved = _train(timer, clock, lambda _: 1.0, save_seconds=3.0)
    return saved, check, clock(), deadline, said


def test_a_stage_cut_by_a_pessimistic_estimate_gets_the_spec_checkpoints_back_when_they_fit():
    """The plan before any step only estimates a step; when the measured steps fit every step the spec asks, and
    its checkpoints' saving and check as well, the stage saves the spec's checkpoints again, the check reserve
    grows by what they cost, and training ends early enough for the larger check."""
    saved, check, ended, deadline, said = _cut_stage(260.0)
    assert saved == [100, 200]
    assert (check.checkpoints, check.seconds) == (2, 90.0)
    assert ended + 30.0 <= deadline  # the one more checkpoint's check still ends before the old deadline
    assert any("every step the spec asks fits with its checkpoints: checkpoints at 100, 200" in s for s in said)


def test_a_stage_cut_to_its_last_checkpoint_stays_so_when_the_spec_checkpoints_would_not_fit():
    saved, check, ended, deadline, said = _cut_stage(215.0)  # 200 steps and 2 saves fit, their check does not
    assert saved == [200]
    assert (check.checkpoints, check.seconds) == (1, 60.0)
    assert ended <= deadline and not any("fits with its checkpoints" in s for s in said)


# ---------------------------------------------------------------- the whole run, on the tiny model


@pytest.mark.pipeline
def test_a_run_on_a_slow_machine_plans_fewer_steps_ends_its_schedule_and_fits_the_budget(
        tmp_path, train_spec, monkeypatch):
    """`behavio train` with a clock where each step takes 0.5 s (a machine fast enough for all the
    spec's steps in the budget) and 1.5 s (three times slower): the slow run says how many of the 4
    epochs it does, trains a complete shorter schedule (learning rate at its floor at the last step),
    saves its checkpoints on the plan and ends within max_minutes."""
    from behavio.compiler.build import compile_spec
    from behavio.train.config import TrainConfig
    from behavio.train.data import pick_rows
    from behavio.train.pipeline import train
    from behavio.train.stage import StageCallback

    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    rows = len(pick_rows(compile_spec(train_spec()), TrainConfig())["sft"])
    per_epoch = math.ceil(rows / 4)  # batch_size 4
    full, budget = 4 * per_epoch, 4 * per_epoch * 0.5 * 1.25  # the fast machine fits every step, with room
    spec = train_spec(method=["sft"], epochs=4, save_steps=2 * per_epoch, max_minutes=budget / 60, eval_max_rows=0)
    begin = StageCallback.on_step_begin
    outcomes = {}
    for name, step_seconds in {"fast": 0.5, "slow": 1.5}.items():
        clock = FakeClock()
        monkeypatch.setattr(StageCallback, "on_step_begin",
                            lambda self, *a, _s=step_seconds, **k: clock.advance(_s) or begin(self, *a, **k))
        said: list[str] = []
        result = train(spec, runs_dir=tmp_path / name, check=False, say=said.append, clock=clock, quiet=True)
        last = result.checkpoints[-1]
        scheduler = torch.load(last.path / "scheduler.pt", weights_only=False)
        outcomes[name] = ([c.step for c in result.checkpoints], last.meta["stage_final"], scheduler["_last_lr"][0],
                          clock() - 1000.0, said, result.run_dir)
    steps, final, lr, seconds, said, _ = outcomes["fast"]
    assert steps == [full // 2, full] and final and lr == 0.0 and seconds <= budget
    steps, final, lr, seconds, said, run_dir = outcomes["slow"]
    assert steps[-1] < full and len(steps) == 2 and final and lr == 0.0 and seconds <= budget
    plan = next(line for line in said if line.startswith("plan ("))
    assert f"sft {full} steps (as the spec asks)" in plan and "reserved" not in plan  # no check asked
    announced = re.search(r"sft: 1.50 s/step measured: (\d+) steps fit before its deadline \((\d.\d) of the spec's 4 "
                          r"epochs\)", "\n".join(said))
    assert announced and int(announced[1]) == steps[-1] and float(announced[2]) == round(4 * steps[-1] / full, 1)
    assert said[-1].startswith("run: ") and f"of the {budget / 60:g}-minute budget" in said[-1]
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(e["step"] for e in events if "loss" in e) == steps[-1]


def test_auto_epochs_train_on_about_1100_examples_in_one_to_three_passes():
    """`epochs: auto` (the default): a small spec gets three passes, a large one fewer passes over more varied rows,
    so a frame library twice as large doubles the variety, not the minutes; a number is taken as given."""
    from behavio.train.config import TrainConfig
    from behavio.train.plan import CheckWork, make_plan, sft_epochs

    assert sft_epochs("auto", 15) == sft_epochs("auto", 300) == 3.0
    assert sft_epochs("auto", 737) == 1.49 and sft_epochs("auto", 1100) == 1.0 and sft_epochs("auto", 5000) == 1.0
    assert sft_epochs(2.5, 737) == 2.5 and sft_epochs(6, 15) == 6.0
    work = CheckWork([[1] * 40] * 10, 80, 32, answer_tokens=40)
    speed = GenerationSpeed(prompt_token=0.003, new_token=0.007)

    def sft_plan(cfg):
        return make_plan(cfg, budget=None, spent={}, sft_rows=737, sft_done=0, dpo_pairs=None, on_policy_prompts=0,
                         prompt_tokens=40, forward=0.5, speed=speed, load_seconds=2.0, work=work, eval_rows=0).stages[0]

    auto = sft_plan(TrainConfig())
    assert (auto.full_steps, auto.epochs) == (math.ceil(1.49 * 93), 1.49)  # 737 rows: 93 batches of 8 per pass
    assert sft_plan(TrainConfig(epochs=3)).full_steps == 279


def test_check_work_counts_the_cases_of_lines_judged_against_the_base_model(tmp_path, smollm2_tokenizer):
    """The plan's base-model answers are the compiled check cases with a rule on an `of_base` line."""
    from behavio.compiler.build import compile_spec
    from behavio.train.plan import check_work

    spec = tmp_path / "facts.yaml"
    spec.write_text("""\
spec: facts
prompts:
  chat: {list: ["Hi there!", "How are you?", "Tell me a joke.", "Name a colour.", "Say something nice.", "Count to 3."]}
  facts: {list: ["Capital of France?", "How many legs has a spider?", "What is 2 + 2?", "Largest ocean?"], holdout: true}
answers:
  chat: {source: literal, template: "Hello!"}
behaviors:
  - {id: knows, kind: contains, applies_to: [facts], text: "a"}
  - {id: short, kind: max_words, limit: 40}
thresholds: {knows: {of_base: 0.9}}
split: {seed: 1, val: 0.1, check: 0.25, min_share: 0.01}
""")
    compiled = compile_spec(spec)
    work = check_work(compiled, smollm2_tokenizer, "auto")
    cases = [json.loads(line) for line in compiled.files["checks.jsonl"].decode().splitlines()]
    facts = [c for c in cases if c["prompt_set"] == "facts"]
    assert len(facts) >= 4 and len(cases) > len(facts)  # the four facts (and paraphrases of some) and chat cases
    assert work.base_cases == len(facts)  # the facts, not the chat cases
    plain = compile_spec(spec.write_text(spec.read_text().replace("{of_base: 0.9}", "0.9")) and spec)
    assert check_work(plain, smollm2_tokenizer, "auto").base_cases == 0
