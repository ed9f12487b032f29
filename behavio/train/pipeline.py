"""compile -> fill -> SFT -> DPO -> check: what ``behavio train`` and ``behavio run`` do.

Works the same in one process and under ``accelerate launch -m behavio train`` (DDP; FSDP and
DeepSpeed are refused, see :mod:`behavio.train.launch`): the main process creates the run
directory, holds the lock and writes ``data/``, checkpoints and the scorecard; the answers to fill,
the on-policy answers and the check cases are shared out across every process.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

from behavio import __version__, distributed
from behavio.check.cases import max_new_tokens
from behavio.errors import BehavioError
from behavio.train.budget import Clock, RunBudget
from behavio.train.config import TrainConfig, parse_overrides, resolve_config, train_schema
from behavio.rundir import (DiskFull, MetricsLog, RunLock, Checkpoint, check_disk_space,
                                  complete_checkpoints, disk_full, incomplete_checkpoints, new_run_dir, newest_complete,
                                  read_json, scan_checkpoints, write_json)
from behavio.train.stage import Stage
from behavio.train.strengths import write_variants

Say = Callable[[str], None]
RESUME_OVERRIDABLE = ("max_minutes",)


@dataclass
class TrainResult:
    """What a training run left behind (``report``: the check engine's RunReport, when it ran)."""

    run_dir: Path
    checkpoints: list[Checkpoint] = field(default_factory=list)
    report: object | None = None
    is_main: bool = True


@dataclass
class Datasets:
    sft: object | None
    sft_val: object | None
    dpo: object | None
    dpo_val: object | None
    refusal_openings: list[int]  # the first trained token of the refusal rows (train.refusal_unlikelihood)
    prefix_openings: list[int]  # the first trained token of rows opening with a scoped prefix (train.prefix_unlikelihood)
    scoped_closings: list[list[int]] = field(default_factory=list)  # a scoped sign-off's tokens as trained (opening_weight)
    answer_openings: list[list[int]] = field(default_factory=list)  # opening sentences as trained (anchor_without_opening)


def train(spec_path: str | Path, overrides: list[str] | None = None, *, base_model: str | None = None,
          resume: str | Path | None = None, runs_dir: str | Path = "runs", check: bool = True,
          say: Say = print, quiet: bool = False, clock: Clock = time.monotonic) -> TrainResult:
    """Train the spec's model (SFT then DPO) into a run directory and score every checkpoint.

    ``max_minutes`` covers all of it (:mod:`behavio.train.budget`); ``clock`` tells the time.
    """
    started = clock()
    from accelerate import PartialState

    from behavio.compiler.build import compile_spec
    from behavio.models import load_tokenizer, resolve_base_model
    from behavio.train.launch import refuse_sharded_launch, single_device_note
    from behavio.train.model import use_cuda

    refuse_sharded_launch()
    parse_overrides(list(overrides or []))  # bad key=value fails before anything is loaded
    compiled = compile_spec(spec_path)
    if resume:
        cfg = resumed_config(Path(resume), overrides, base_model)
    else:
        cfg = resolve_config(compiled.spec.train, overrides, base_model)
    cuda = use_cuda(cfg)
    state = PartialState(cpu=not cuda, timeout=timedelta(hours=3))  # joins the process group under a launcher
    main = state.is_main_process
    say = say if main else (lambda _: None)
    budget = RunBudget(cfg.max_minutes, started, clock)
    note = single_device_note(cuda, state.num_processes)
    if note:
        say(note)
    with state.main_process_first():
        model_path = resolve_base_model(cfg.base_model)
    lock = None
    run_dir, set_up = None, bool(resume)  # set_up: config.json and data/ are complete, so --resume can continue
    try:
        run_dir = Path(resume) if resume else None
        if main:
            run_dir = run_dir or new_run_dir(Path(runs_dir), compiled.spec.id)
            lock = RunLock(run_dir).acquire()
        run_dir = Path(distributed.broadcast(str(run_dir) if main else None))
        if main and not resume:
            say(f"run: {run_dir}")
            check_disk_space(run_dir, 20_000_000)  # data/; each stage checks its checkpoints' needs
            write_json(run_dir / "config.json", run_config(cfg, model_path, compiled, cuda, state.num_processes))
            (run_dir / "manifest.json").write_bytes(compiled.files["manifest.json"])
            (run_dir / "spec.yaml").write_text(compiled.spec.source_text, encoding="utf-8")  # for the model card
        if not resume:
            from behavio.train.data import fill_and_write

            filling = clock()
            fill_and_write(compiled, cfg, model_path, run_dir / "data", quiet=quiet, say=say)  # every process
            budget.record("fill", clock() - filling)
            set_up = True
        elif main:
            _warn_if_spec_changed(run_dir, compiled, say)
        state.wait_for_everyone()
        tokenizer = load_tokenizer(model_path, trust_remote_code=cfg.trust_remote_code)
        sets = build_datasets(run_dir, cfg, tokenizer, say, check_tokens=max_new_tokens(compiled.spec))
        cfg = with_sft_epochs(cfg, sets, say)
        _train_stages(run_dir, cfg, compiled, model_path, tokenizer, sets, cuda, budget, resume=bool(resume),
                      check=check, say=say)
        state.wait_for_everyone()
        result = TrainResult(run_dir, complete_checkpoints(run_dir), is_main=main)
        if main and result.checkpoints:
            write_variants(run_dir, result.checkpoints[-1], cfg.strengths, say)
        state.wait_for_everyone()
        if check:
            checking = clock()
            result.report = score_run(spec_path, run_dir, cfg, model_path, say=say, quiet=quiet)
            budget.record("check", clock() - checking)
        say(budget.summary())
        return result
    except DiskFull as exc:
        raise BehavioError(_no_space(exc.what, spec_path, run_dir, set_up)) from None
    except Exception as exc:
        if not disk_full(exc, run_dir or Path(runs_dir)):
            raise
        what = f"writing {getattr(exc, 'filename', None) or run_dir or runs_dir}"
        raise BehavioError(_no_space(what, spec_path, run_dir, set_up)) from None
    finally:
        if lock is not None:
            lock.release()


def _no_space(what: str, spec_path: str | Path, run_dir: Path | None, set_up: bool) -> str:
    """The one message for a full disk: what was being written, what is intact, how to continue."""
    if run_dir is None or not set_up:
        return f"no space left on device while {what}; free some space and start the run again"
    newest = newest_complete(run_dir)
    kept = f"{newest.path.name} is the newest complete checkpoint" if newest else "no checkpoint is complete yet"
    return (f"no space left on device while {what}, {kept}. Free some space, then continue with: "
            f"behavio train {spec_path} --resume {run_dir}")


def run_config(cfg: TrainConfig, model_path: Path, compiled, cuda: bool, processes: int) -> dict:
    """``config.json``: every resolved setting, ``base_model`` as the resolved path, and where it came from."""
    return {**cfg.to_dict(), "base_model": str(model_path), "base_model_name": cfg.base_model,
            "spec": compiled.spec.id, "spec_file": str(compiled.spec.path), "spec_hash": compiled.manifest["spec_sha256"],
            "device": "cuda" if cuda else "cpu", "processes": processes, "behavio_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def resumed_config(run_dir: Path, overrides: list[str] | None, base_model: str | None) -> TrainConfig:
    """The config a run was started with; only ``max_minutes`` may change on resume."""
    if not run_dir.is_dir():
        raise BehavioError(f"--resume {run_dir}: no such run directory")
    saved = read_json(run_dir / "config.json")
    settings = {k: v for k, v in saved.items() if k in train_schema()["properties"]}
    for key, value in parse_overrides(list(overrides or [])).items():
        if key not in RESUME_OVERRIDABLE and value != settings.get(key):
            raise BehavioError(f"--resume: {key} cannot change in a started run (it was {settings.get(key)!r}); "
                               f"only {', '.join(RESUME_OVERRIDABLE)} can")
        settings[key] = value
    if base_model and base_model not in (settings["base_model"], saved.get("base_model_name")):
        raise BehavioError(f"--resume: the run trains {saved.get('base_model_name')}; --base-model cannot change it")
    return TrainConfig.from_dict(settings)


def _warn_if_spec_changed(run_dir: Path, compiled, say: Say) -> None:
    saved = read_json(run_dir / "config.json")
    if saved.get("spec") != compiled.spec.id:
        raise BehavioError(f"--resume {run_dir}: this run trains spec {saved.get('spec')!r}, not {compiled.spec.id!r}")
    if saved.get("spec_hash") != compiled.manifest["spec_sha256"]:
        say("warning: the spec changed since this run started; training continues on the run's own data/")
    for path in incomplete_checkpoints(run_dir):
        say(f"resume: skipping incomplete {path.name} (no complete behavio.json)")


def build_datasets(run_dir: Path, cfg: TrainConfig, tokenizer, say: Say, check_tokens: int | None = None) -> Datasets:
    """Tokenize and validate every split before the first training step; say which training answers run longer
    than the check lets an answer write (``check_tokens``)."""
    from behavio.train.data import (answer_openings, dpo_dataset, long_answers_warning, read_data, refusal_openings,
                                    scoped_closings, scoped_openings, sft_dataset)

    rows = read_data(run_dir / "data")
    sft = sft_dataset(rows["sft"], tokenizer, cfg) if rows["sft"] else None
    sets = Datasets(
        sft=sft,
        sft_val=sft_dataset(rows["sft.val"], tokenizer, cfg, "validation examples") if rows["sft.val"] else None,
        dpo=dpo_dataset(rows["dpo"], tokenizer, cfg) if rows["dpo"] else None,
        dpo_val=dpo_dataset(rows["dpo.val"], tokenizer, cfg, "validation pairs") if rows["dpo.val"] else None,
        refusal_openings=refusal_openings(rows["sft"], sft["labels"]) if sft is not None else [],
        prefix_openings=scoped_openings(rows["sft"], sft["labels"]) if sft is not None else [],
        scoped_closings=scoped_closings(rows["sft"], sft["labels"], tokenizer) if sft is not None else [],
        answer_openings=(answer_openings(rows["sft"], sft["labels"], tokenizer)
                         if sft is not None and cfg.anchor_without_opening and cfg.anchor > 0 else []),
    )
    if "sft" in cfg.method and sets.sft is None:
        raise BehavioError("method includes sft but the spec compiles to no SFT examples")
    if "dpo" in cfg.method and sets.dpo is None:
        raise BehavioError("method includes dpo but the spec compiles to no DPO pairs")
    trained = sum(sum(1 for x in labels if x != -100) for labels in sets.sft["labels"]) if sets.sft is not None else 0
    say(f"data: {len(rows['sft'])} SFT examples ({trained} trained tokens), {len(rows['dpo'])} DPO pairs, "
        f"{len(rows['sft.val'])}+{len(rows['dpo.val'])} validation rows; all fit max_length={cfg.max_length}")
    long = long_answers_warning(rows["sft"], sets.sft["labels"], check_tokens) if sets.sft is not None else None
    if long:
        say(f"warning: {long}")
    if sets.scoped_closings and cfg.opening_weight != 1 and "sft" in cfg.method:
        say(f"sft: where an answer ends with a sign-off scoped to some sets, its first tokens weigh "
            f"opening_weight={cfg.opening_weight:g} as an answer's opening does, and so does every stop token "
            f"(ending without it) ({len(sets.scoped_closings)} form(s))")
    return sets


def with_sft_epochs(cfg: TrainConfig, sets: Datasets, say: Say) -> TrainConfig:
    """``cfg`` with ``epochs: auto`` resolved for this run's SFT examples, said so the log shows what it came to."""
    if cfg.epochs != "auto":
        return cfg
    from behavio.train.plan import AUTO_EXAMPLES, sft_epochs

    rows = len(sets.sft) if sets.sft is not None else 0
    epochs = sft_epochs("auto", rows)
    if rows:
        say(f"epochs: auto = {epochs:g} passes over {rows} SFT examples (about {AUTO_EXAMPLES:,} trained; 1 to 3 passes)")
    return dataclasses.replace(cfg, epochs=epochs)


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _train_stages(run_dir: Path, cfg: TrainConfig, compiled, model_path: Path, tokenizer, sets: Datasets,
                  cuda: bool, budget: RunBudget, *, resume: bool, check: bool, say: Say) -> None:
    """SFT then DPO, continuing from the newest complete checkpoint when resuming; planned inside the budget."""
    from accelerate import PartialState

    from behavio.train.model import describe_cpu_precision, load_for_training, new_adapter, trained_adapter

    state = PartialState()
    main = state.is_main_process
    if not cuda:
        say(describe_cpu_precision(cfg))
    last = newest_complete(run_dir) if resume else None
    metrics = MetricsLog(run_dir)
    if last is not None:
        say(f"resume: from {last.path.name} ({last.stage} step {last.meta.get('stage_step')})")
        if main:
            metrics.truncate_after(last.step)
    elif resume:
        say("resume: no complete checkpoint yet; starting training from the beginning")
        if main:
            metrics.truncate_after(0)  # the killed attempt's events; this one logs them again
    clock = budget.clock
    common = dict(run_dir=run_dir, cfg=cfg, spec_hash=compiled.manifest["spec_sha256"], base_model=str(model_path),
                  cuda=cuda, metrics=metrics, say=say, is_main=main, clock=clock)

    sft_done: Path | None = None
    sft_resume = None
    if last is not None and last.stage == "dpo":
        sft_done = run_dir / last.meta["init_from"] if last.meta.get("init_from") else None
    elif last is not None and last.meta.get("stage_final"):
        sft_done = last.path
    elif "sft" in cfg.method:
        sft_resume = last
    train_sft = "sft" in cfg.method and sft_done is None

    loading = clock()
    base = load_for_training(model_path, cfg, cuda)
    model = new_adapter(base, cfg) if train_sft else None  # a resumed trainer loads its weights
    plan_run(budget, cfg, compiled, tokenizer, sets, model if model is not None else base, clock() - loading,
             sft=train_sft, sft_from=int(sft_resume.meta.get("stage_step", 0)) if sft_resume else 0,
             dpo="dpo" in cfg.method, existing=len(complete_checkpoints(run_dir)), check=check,
             processes=state.num_processes, say=say)

    if train_sft:
        from behavio.train.sft import run_sft

        stage = Stage("sft", deadline=budget.deadline("sft"), resume=sft_resume, plan=budget.stage_plan("sft"),
                      check=budget.plan.check if budget.plan else None, **common)
        training = clock()
        sft_done = run_sft(stage, model, tokenizer, sets.sft, sets.sft_val, sets.refusal_openings,
                           sets.prefix_openings, sets.scoped_closings, sets.answer_openings)
        budget.record("sft", clock() - training, stage.outcome())
        del model, base
        base = None
        _free_memory()

    if "dpo" in cfg.method:
        from behavio.train.dpo import run_dpo

        dpo_resume = last if last is not None and last.stage == "dpo" else None
        offset = int(read_json(sft_done / "behavio.json")["step"]) if sft_done else 0
        starting = clock()
        base = base if base is not None else load_for_training(model_path, cfg, cuda)
        model = trained_adapter(base, sft_done) if sft_done else new_adapter(base, cfg)
        pairs = dpo_training_set(run_dir, cfg, model, tokenizer, sets.dpo, on_policy=sft_done is not None, say=say)
        budget.record("between stages", clock() - starting)
        stage = Stage("dpo", offset=offset, deadline=budget.deadline("dpo"), resume=dpo_resume,
                      init_from=sft_done.name if sft_done else None, plan=budget.stage_plan("dpo"),
                      check=budget.plan.check if budget.plan else None, **common)
        training = clock()
        run_dpo(stage, model, tokenizer, pairs, sets.dpo_val)
        budget.record("dpo", clock() - training, stage.outcome())
        del model, base
        _free_memory()
    metrics.close()


def plan_run(budget: RunBudget, cfg: TrainConfig, compiled, tokenizer, sets: Datasets, model, load_seconds: float,
             *, sft: bool, sft_from: int, dpo: bool, existing: int, check: bool, processes: int, say: Say) -> None:
    """Measure this machine on ``model``, plan every stage and the check inside the budget, and say the plan."""
    from behavio.train import on_policy
    from behavio.train.plan import answer_tokens, check_work, forward_seconds, generation_speed, make_plan

    clock = budget.clock
    work = check_work(compiled, tokenizer, cfg.fold_system)
    if not check:
        work.prompts = []
    features = list(sets.sft) if sets.sft is not None else []
    work.answer_tokens = answer_tokens(features)
    forward = forward_seconds(model, features, cfg.batch_size, clock) if features else 0.0
    speed = generation_speed(model, tokenizer, work, clock)
    prompt_tokens = sum(map(len, work.prompts)) / max(1, len(work.prompts))
    dpo_pairs = None
    if dpo:
        dpo_pairs = min(len(sets.dpo), cfg.dpo_max_pairs) if cfg.dpo_max_pairs else len(sets.dpo)
    prompts = min(len(sets.sft or []), on_policy.PROMPTS_PER_PAIR * (cfg.dpo_max_pairs or len(sets.sft or [])))
    plan = make_plan(cfg, budget=budget.seconds, spent=budget.spent_before_planning(),
                     sft_rows=len(sets.sft) if sft else None, sft_done=sft_from, dpo_pairs=dpo_pairs,
                     on_policy_prompts=prompts if cfg.dpo_on_policy else 0, prompt_tokens=prompt_tokens,
                     forward=forward, speed=speed, load_seconds=load_seconds, work=work,
                     eval_rows=min(cfg.eval_max_rows, len(sets.sft_val or [])), processes=processes,
                     existing_checkpoints=existing)
    budget.plan = plan
    say(plan.describe())


def dpo_training_set(run_dir: Path, cfg: TrainConfig, model, tokenizer, rule_set, *, on_policy: bool, say: Say):
    """The DPO pairs: rule-derived, led by the SFT model's own failures (``dpo_on_policy``, after SFT).

    The processes answer the training prompts once (each its share) and the main process writes
    ``data/dpo.on_policy.jsonl``; a resumed DPO stage reads that file instead of answering again.
    """
    if not (cfg.dpo_on_policy and on_policy):
        return rule_set
    from accelerate import PartialState

    from behavio.train import on_policy as own
    from behavio.train.data import dpo_dataset, read_data

    data = run_dir / "data"
    rows = read_data(data)
    state = PartialState()
    answered = distributed.broadcast(own.read_pairs(data) is not None)  # a resumed DPO stage: written already
    if not answered:
        pairs, summary = own.make_pairs(model, tokenizer, rows["sft"], cfg, say=say)  # every process, its share
        if state.is_main_process:
            own.write_pairs(data, pairs, summary)
    state.wait_for_everyone()
    mixed = own.training_pairs(own.read_pairs(data) or [], rows["dpo"], cfg.dpo_max_pairs, cfg.seed)
    return dpo_dataset(mixed, tokenizer, cfg)


def score_run(spec_path: str | Path, run_dir: Path, cfg: TrainConfig, model_path: Path, *, say: Say,
                      quiet: bool = False):
    """Score every checkpoint with the check engine (run's device, fold and trust settings); it writes
    scorecard.{json,md,html} and ``best``. Called by every process: under a launcher each one first
    answers its share of the check cases for every checkpoint (into the generation cache), then the
    main process scores them all from the cache. Returns the report on the main process, else None."""
    from behavio.check import engine

    settings = dict(base_model=str(model_path), quantization=cfg.quantization, trust_remote_code=cfg.trust_remote_code,
                    device=cfg.device, fold=cfg.fold_system, quiet=quiet)
    if distributed.size() > 1:
        spec = engine.load_check_spec(spec_path)
        spec.cases = distributed.share(spec.cases)
        say(f"check: {len(spec.cases)} of the check cases on each of {distributed.size()} processes")
        engine.check_checkpoints(spec, run_dir, **settings)
        distributed.barrier()
    if not distributed.is_main():
        return None
    count = len([c for c in scan_checkpoints(run_dir) if not c.broken])
    say(f"check: scoring {count} checkpoint{'' if count == 1 else 's'}")
    report = engine.check_run(spec_path, run_dir, log=say, **settings)
    best = report.best
    if best is not None:
        verdict = "meets every threshold" if best.meets_thresholds else "below a threshold"
        say(f"check: best {best.label} ({verdict}); scorecard in {run_dir / 'scorecard.md'}")
    return report
