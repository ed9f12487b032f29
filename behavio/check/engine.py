"""The check engine: answer a spec's check cases with a model and score them (``behavio.check.scoring``).

- ``check_model``: one base model or adapter directory.
- ``check_checkpoints`` / ``check_run``: every checkpoint of a run, the base loaded once and the
  checkpoints' LoRA adapters side by side (:mod:`behavio.check.generation`); generations cached by
  (model/adapter content hash, settings, case messages), so re-checking an unchanged run generates
  nothing and loads nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from behavio.rundir import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, Checkpoint, check_safetensors, content_hash,
                                       find_checkpoints, read_json, run_base_model, run_fold_system)
from behavio.check import baseline
from behavio.check.cases import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, CheckCase, CheckSpec, load_check_spec
from behavio.check.responses import Responses
from behavio.check.scorecard import Scorecard, pick_best, rank_key
from behavio.check.scoring import score_cases
from behavio.errors import BehavioError
from behavio.check.generation import Job, answer
from behavio.generate import Generation, GenerationCache, generation_settings
from behavio.models import cache_root, load_base, load_settings, resolve_model

Log = Callable[[str], None]


def _quiet_log(_: str) -> None:
    pass


def _model_hash(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _check_cache(model_hash: str, max_new_tokens: int, quantization: str, use_cache: bool,
                 fold: bool | str = "auto", device: str = "auto") -> GenerationCache:
    settings = generation_settings("check", max_new_tokens=max_new_tokens, fold=fold,
                                   load=load_settings(quantization, device))
    return GenerationCache(cache_root() / "checks", model_hash, settings, enabled=use_cache)


def _case_items(cases: list[CheckCase]) -> dict[str, list[dict]]:
    return {c.key: c.messages for c in cases}


def _responses(cases: list[CheckCase], gens: dict[str, Generation]) -> Responses:
    return Responses.from_generations(cases, [gens[c.key] for c in cases])


def _adapter_dir(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()


def _adapter_base(path: Path, base_model: str | None) -> str:
    if base_model:
        return base_model
    meta = read_json(path / "behavio.json") if (path / "behavio.json").is_file() else {}
    name = meta.get("base_model") or read_json(path / ADAPTER_CONFIG).get("base_model_name_or_path")
    if not name:
        raise BehavioError(f"{path / ADAPTER_CONFIG}: no base_model_name_or_path; pass --base-model")
    return name


def generate_responses(model_name: str | Path, cases: list[CheckCase], *, max_new_tokens: int, batch_size: int,
                       base_model: str | None = None, quantization: str = "auto", trust_remote_code: bool = False,
                       use_cache: bool = True, quiet: bool = False, device: str = "auto",
                       fold: bool | str | None = None) -> tuple[Responses, int]:
    """Answers of a base model or adapter directory to ``cases``; returns (responses, cases generated).

    ``fold`` defaults to what the adapter's run trained with (its ``config.json``), else ``auto``.
    """
    from behavio.models import model_fingerprint

    path = Path(model_name)
    adapter = path if path.is_dir() and _adapter_dir(path) else None
    if adapter is not None:
        read_json(adapter / ADAPTER_CONFIG)
        check_safetensors(adapter / ADAPTER_WEIGHTS)
        base_path = resolve_model(_adapter_base(adapter, base_model))
        model_hash = _model_hash(model_fingerprint(base_path), content_hash(adapter))
    else:
        base_path = resolve_model(model_name)
        model_hash = _model_hash(model_fingerprint(base_path))
    if fold is None:
        fold = run_fold_system(adapter.parent) if adapter is not None else "auto"
    job = Job(str(model_name), adapter, _check_cache(model_hash, max_new_tokens, quantization, use_cache, fold, device))
    items = _case_items(cases)
    generated = 0
    if job.missing(list(items)):
        base = load_base(base_path, quantization=quantization, trust_remote_code=trust_remote_code, device=device)
        generated = answer(base.model, base.tokenizer, [job], items, max_new_tokens=max_new_tokens,
                           batch_size=batch_size, fold=fold, quiet=quiet)
        if job.problem:
            raise BehavioError(job.problem)
    return _responses(cases, {k: job.cache.get(k) for k in items}), generated


def responses_from_model(model: str | Path, cases: list[CheckCase], max_new_tokens: int | None = None, *,
                         batch_size: int = DEFAULT_BATCH_SIZE, **kwargs) -> Responses:
    """Answers of ``model`` (id, path, ``default``, or adapter dir) to ``cases`` (used by the pytest plugin)."""
    responses, _ = generate_responses(model, cases, max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
                                      batch_size=batch_size, **kwargs)
    return responses


def check_model(spec: CheckSpec, model: str | Path, *, max_new_tokens: int | None = None, batch_size: int | None = None,
                **kwargs) -> Scorecard:
    """Scorecard of one base model or adapter directory on ``spec``'s check cases. Lines whose thresholds are a
    share of the base model's rate (``of_base``) get it measured on an adapter's base model (or ``base_model``);
    a full model given without ``base_model`` has none to measure (the base then counts as passing every case)."""
    settings = dict(max_new_tokens=max_new_tokens or spec.max_new_tokens, batch_size=batch_size or spec.batch_size)
    responses, generated = generate_responses(model, spec.cases, **settings, **kwargs)
    lines = baseline.lines_of_base(spec.cases, spec.thresholds)
    cases = baseline.cases_of(spec.cases, lines)
    base_responses = None
    path = Path(model)
    adapter = path.is_dir() and _adapter_dir(path)
    if lines and (adapter or kwargs.get("base_model")):
        name = _adapter_base(path, kwargs.get("base_model")) if adapter else kwargs["base_model"]
        fold = kwargs.get("fold")
        if fold is None:
            fold = run_fold_system(path.parent) if adapter else "auto"
        base_kwargs = {k: v for k, v in kwargs.items() if k not in ("base_model", "fold")}
        base_responses, more = generate_responses(name, cases, **settings, fold=fold, **base_kwargs)
        generated += more
    spec = baseline.with_base(spec, lines, cases, base_responses)
    return score_cases(spec.cases, responses, spec.thresholds, label=str(model), meta={"generated": generated})


# ---------------------------------------------------------------- every checkpoint of a run

@dataclass
class RunReport:
    """Scorecards of every sound checkpoint of a run, the broken ones, and the best."""

    spec: CheckSpec
    run_dir: Path
    cards: list[Scorecard]
    broken: list[Checkpoint]
    base_model: str
    max_new_tokens: int
    generated: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def best(self) -> Scorecard | None:
        return pick_best(self.cards)

    @property
    def exit_code(self) -> int:
        """2 when a checkpoint is broken, else 0 when the best meets every threshold, else 1."""
        if self.broken or not self.cards:
            return 2
        return 0 if self.best and self.best.meets_thresholds else 1

    def to_dict(self) -> dict:
        best = self.best
        return {
            "spec": self.spec.id, "spec_sha256": self.spec.spec_sha256, "checks_sha256": self.spec.checks_sha256,
            "run_dir": str(self.run_dir), "base_model": self.base_model, "max_new_tokens": self.max_new_tokens,
            "thresholds": {line: t.to_dict() for line, t in self.spec.thresholds.items()}, "best": best.label if best else None,
            "best_meets_thresholds": bool(best and best.meets_thresholds),
            "ranking": [c.label for c in sorted(self.cards, key=rank_key)],
            "checkpoints": [c.to_dict() for c in self.cards],
            "broken": [{"checkpoint": b.name, "step": b.step, "problem": b.problem} for b in self.broken],
            "warnings": self.warnings,
        }


def check_checkpoints(spec: CheckSpec, run_dir: str | Path, *, base_model: str | None = None,
                      max_new_tokens: int | None = None, batch_size: int | None = None, quantization: str = "auto",
                      trust_remote_code: bool = False, use_cache: bool = True, quiet: bool = False,
                      log: Log = _quiet_log, fold: bool | str | None = None, device: str = "auto") -> RunReport:
    """Score every checkpoint of ``run_dir``; broken ones are listed, never fatal.

    ``fold`` (system message into the first user turn) defaults to what the run trained with.
    """
    from behavio.models import model_fingerprint

    run_dir = Path(run_dir)
    found = find_checkpoints(run_dir)
    sound = [c for c in found if not c.broken]
    name = base_model or run_base_model(run_dir, sound)
    if not name:
        raise BehavioError(f"{run_dir / 'config.json'}: no \"base_model\"; pass --base-model")
    base_path = resolve_model(name)
    max_new = max_new_tokens or spec.max_new_tokens
    fold = run_fold_system(run_dir) if fold is None else fold
    report = RunReport(spec, run_dir, [], [c for c in found if c.broken], str(base_path), max_new)
    fingerprint = model_fingerprint(base_path)
    items = _case_items(spec.cases)
    jobs = [Job(ckpt.name, ckpt.path, _check_cache(_model_hash(fingerprint, content_hash(ckpt.path)), max_new,
                                                   quantization, use_cache, fold, device)) for ckpt in sound]
    lines = baseline.lines_of_base(spec.cases, spec.thresholds)
    base_cases = baseline.cases_of(spec.cases, lines)
    base_items = _case_items(base_cases)
    base_job = Job("base", None, _check_cache(_model_hash(fingerprint), max_new, quantization, use_cache, fold, device))
    if any(job.missing(list(items)) for job in jobs) or base_job.missing(list(base_items)):
        log(f"loading base model {base_path}")
        base = load_base(base_path, quantization=quantization, trust_remote_code=trust_remote_code, device=device)
        settings = dict(max_new_tokens=max_new, batch_size=batch_size or spec.batch_size, fold=fold, quiet=quiet, log=log)
        answer(base.model, base.tokenizer, jobs, items, **settings)
        if base_job.missing(list(base_items)):
            log(f"base model: answering the {len(base_items)} cases of {', '.join(lines)} (thresholds of_base)")
            report.generated += answer(base.model, base.tokenizer, [base_job], base_items, **settings)
    if lines:
        answers = _responses(base_cases, {k: base_job.cache.get(k) for k in base_items})
        spec = report.spec = baseline.with_base(spec, lines, base_cases, answers)
        log("base model on " + ", ".join(f"{line} {spec.thresholds[line].base:.0%}" for line in lines))
    for i, (ckpt, job) in enumerate(zip(sound, jobs), 1):
        if job.problem is not None:
            ckpt.problem = job.problem
            report.broken.append(ckpt)
            log(f"checkpoint {i} of {len(sound)}: {ckpt.name} broken: {job.problem}")
            continue
        generated = len(job.answers)
        gens = {k: job.cache.get(k) for k in items}
        log(f"checkpoint {i} of {len(sound)}: {ckpt.name}, {generated} of {len(spec.cases)} cases generated")
        report.generated += generated
        spec_hash = ckpt.meta.get("spec_hash")
        if isinstance(spec_hash, str) and spec_hash and not spec.spec_sha256.startswith(spec_hash):
            report.warnings.append(f"{ckpt.path / 'behavio.json'}: trained on spec hash {spec_hash[:12]}, "
                                   f"the spec is now {spec.spec_sha256[:12]}")
        meta = {"checkpoint": ckpt.name, "path": str(ckpt.path), "metrics": ckpt.meta.get("metrics") or {},
                "generated": generated, "strength": ckpt.strength}
        report.cards.append(score_cases(spec.cases, _responses(spec.cases, gens), spec.thresholds, label=ckpt.name,
                                        step=ckpt.step, stage=ckpt.stage, meta=meta))
    report.broken.sort(key=lambda c: (c.step, c.name))
    return report


def check_run(spec_path: str | Path, run_dir: str | Path, *, write: bool = True, **kwargs) -> RunReport:
    """Check every checkpoint of ``run_dir`` against the spec; write scorecard.{json,md,html} and ``best``."""
    report = check_checkpoints(load_check_spec(spec_path), run_dir, **kwargs)
    if write:
        from behavio.check.report import write_run_outputs

        write_run_outputs(report)
    return report
