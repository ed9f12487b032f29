"""What a run will do inside ``max_minutes``: measured on this machine, then planned before training.

Two short measurements on the loaded model: a forward pass of a training batch (a training step
costs about two and a half) and a few generated tokens at the check's batch size. From them, the spec's
steps and the data sizes, :func:`make_plan` estimates every stage and the check of every
checkpoint, reserves the check, and fits the training stages into what is left
(:mod:`behavio.train.budget` does the arithmetic; the stages correct their own estimates once
their first steps are timed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from behavio.train.budget import CheckPlan, Clock, GenerationSpeed, Plan, StagePlan, check_seconds, fit
from behavio.train.config import TrainConfig
from behavio.train.strengths import weaker_copies

STEP_VS_FORWARD = 2.5   # a training step (forward, backward, optimizer) against a forward pass without gradients:
                        # 2.2-2.6 measured on the 2-core AMD EPYC (poodle spec, session 14); 3.0 cut specs that fit
DPO_VS_SFT = 3.7        # a DPO step (policy and reference on chosen and rejected) against an SFT step, measured
SAVE_SECONDS = 2.0      # writing one checkpoint (adapter, optimizer state)
STAGE_START_SECONDS = 10.0  # loading the base model again and preparing a trainer between stages
AUTO_EXAMPLES = 1100    # `epochs: auto` trains on about this many examples (bench/SPEC_QUALITY.md, session 13)
AUTO_EPOCHS = (1.0, 3.0)  # ... in at least one pass and at most three
SPEED_ROWS = 64         # rows of the batch the check's generation speed is measured on


@dataclass
class CheckWork:
    """The check after training: case prompts (token ids), new tokens per case, batch size, and how long a
    trained answer runs (tokens; none: unknown, every case is assumed to write ``max_new_tokens``)."""

    prompts: list[list[int]]
    max_new_tokens: int
    batch_size: int
    answer_tokens: int | None = None
    base_cases: int = 0  # cases the base model answers once too (lines whose thresholds are a share of its rate)

    def new_tokens(self) -> int:
        """Tokens a case is expected to write: a trained answer and its stop token, at most ``max_new_tokens``."""
        if self.answer_tokens is None:
            return self.max_new_tokens
        return max(1, min(self.max_new_tokens, self.answer_tokens + 1))


def answer_tokens(features: list[dict], quantile: float = 0.9) -> int | None:
    """How long the training answers run (trained tokens per example, at ``quantile``): what the trained model
    writes at the check, since a batch decodes until its long answers end."""
    lengths = sorted(sum(1 for label in f["labels"] if label != -100) for f in features)
    return lengths[min(len(lengths) - 1, int(quantile * len(lengths)))] if lengths else None


def generation_prompts(messages: list[dict]) -> list[list[dict]]:
    """The conversations a check case is generated from: one per assistant turn the model writes itself
    (content None, :mod:`behavio.conversation`), then the case's own; the open turns shown empty (an estimate)."""
    is_open = [m.get("role") == "assistant" and m.get("content") is None for m in messages]
    shown = [{**m, "content": ""} if open_ else m for m, open_ in zip(messages, is_open)]
    return [shown[:i] for i, open_ in enumerate(is_open) if open_] + [shown]


def check_work(compiled, tokenizer, fold) -> CheckWork:
    """The compiled spec's check cases as the check engine will generate them."""
    import json

    from behavio.chat import encode_text, render_prompt
    from behavio.check import baseline
    from behavio.check.cases import batch_size, load_cases, max_new_tokens

    cases = [json.loads(line) for line in compiled.files["checks.jsonl"].decode("utf-8").splitlines() if line.strip()]
    prompts = [encode_text(render_prompt(m, tokenizer, fold), tokenizer)
               for c in cases for m in generation_prompts(c["messages"])]
    loaded = load_cases(cases)
    base_cases = len(baseline.cases_of(loaded, baseline.lines_of_base(loaded, compiled.manifest["thresholds"])))
    return CheckWork(prompts, max_new_tokens(compiled.spec), batch_size(compiled.spec), base_cases=base_cases)


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def forward_seconds(model, features: list[dict], batch_size: int, clock: Clock) -> float:
    """Seconds of one forward pass (no gradients) over a right-padded batch of training examples."""
    import torch

    rows = features[:batch_size]
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
        mask[i, :len(r["input_ids"])] = 1
    device = next(model.parameters()).device
    with torch.no_grad():
        start = clock()
        model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False, logits_to_keep=1)
        return clock() - start


def generation_speed(model, tokenizer, work: CheckWork, clock: Clock, new_tokens: int = 8) -> GenerationSpeed:
    """Per prompt token and per new token per row, from one batch of check prompts (as many rows as the check's
    batches, at most ``SPEED_ROWS``) decoded 1 and 1 + ``new_tokens`` tokens after a warm-up pass.

    A new token's cost is the difference of two timings, so both must be long enough for the machine's jitter
    not to decide it: 16 rows and 4 tokens gave anything from 0 to 20 ms a row-token on the same machine.
    """
    from behavio.decode import Row, decode_batch

    rows = [Row(p) for p in work.prompts[:min(work.batch_size, SPEED_ROWS)]] or [Row([tokenizer.eos_token_id or 0] * 8)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    try:
        decode_batch(model, rows[:2], max_new_tokens=2, stop_ids=[], pad_id=pad)  # warm-up: allocations, kernels
        start = clock()
        decode_batch(model, rows, max_new_tokens=1, stop_ids=[], pad_id=pad)
        first = clock() - start
        start = clock()
        decode_batch(model, rows, max_new_tokens=1 + new_tokens, stop_ids=[], pad_id=pad)
        more = clock() - start
    finally:
        model.train(was_training)
    prompt_tokens = sum(len(r.prompt) for r in rows)
    per_new = max(more - first, 0.0) / (new_tokens * len(rows))
    return GenerationSpeed(prompt_token=max(first, 1e-6) / prompt_tokens, new_token=max(per_new, 1e-6))


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------


def steps_per_epoch(rows: int, cfg: TrainConfig, processes: int) -> int:
    """Optimizer steps per pass over ``rows`` (transformers' count)."""
    batches = math.ceil(rows / max(1, cfg.batch_size * processes))
    return max(batches // cfg.grad_accum + int(batches % cfg.grad_accum > 0), 1)


def sft_epochs(epochs: float | str, rows: int) -> float:
    """The SFT passes ``epochs`` asks for over ``rows`` examples: a number as given; ``auto``: about
    AUTO_EXAMPLES examples, within AUTO_EPOCHS (a small spec gets three passes, a large one one or two of more
    varied rows), to two decimals."""
    if epochs != "auto":
        return float(epochs)
    low, high = AUTO_EPOCHS
    return round(min(high, max(low, AUTO_EXAMPLES / max(rows, 1))), 2)


def full_steps(rows: int, epochs: float, max_steps: int | None, cfg: TrainConfig, processes: int) -> int:
    return max_steps if max_steps else math.ceil(epochs * steps_per_epoch(rows, cfg, processes))


def make_plan(cfg: TrainConfig, *, budget: float | None, spent: dict[str, float], sft_rows: int | None,
              sft_done: int, dpo_pairs: int | None, on_policy_prompts: int, prompt_tokens: float,
              forward: float, speed: GenerationSpeed, load_seconds: float, work: CheckWork, eval_rows: int,
              processes: int = 1, existing_checkpoints: int = 0) -> Plan:
    """The run's plan from the data sizes and the measurements (``sft_rows`` None: SFT is done or not asked)."""
    step = STEP_VS_FORWARD * forward
    per_checkpoint = SAVE_SECONDS + (math.ceil(eval_rows / cfg.batch_size) * forward if eval_rows else 0.0)
    stages = []
    if sft_rows is not None:
        epochs = sft_epochs(cfg.epochs, sft_rows)
        full = full_steps(sft_rows, epochs, cfg.max_steps, cfg, processes)
        teacher = steps_per_epoch(sft_rows, cfg, processes) * forward if cfg.anchor > 0 else 0.0
        stage = StagePlan("sft", full, full, cfg.save_steps, step, epochs, setup=teacher,
                          per_checkpoint=per_checkpoint, done=min(sft_done, full))
        stages.append(stage)
    between = 0.0
    if dpo_pairs is not None:
        full = full_steps(dpo_pairs, cfg.dpo_epochs, cfg.dpo_max_steps, cfg, processes)
        stage = StagePlan("dpo", full, full, cfg.save_steps, DPO_VS_SFT * step, cfg.dpo_epochs,
                          per_checkpoint=per_checkpoint)
        stages.append(stage)
        answers = on_policy_prompts * (prompt_tokens * speed.prompt_token + cfg.dpo_on_policy_tokens * speed.new_token)
        between = STAGE_START_SECONDS + load_seconds + (answers if sft_rows is not None else 0.0)

    def checked(stages: list[StagePlan]) -> CheckPlan | None:
        if not work.prompts:
            return None
        checkpoints = existing_checkpoints + sum(len([c for c in s.checkpoint_steps() if c > s.done]) for s in stages)
        checkpoints += len(weaker_copies(cfg.strengths)) if checkpoints else 0  # the last one's, checked as well
        tokens = work.new_tokens()
        return CheckPlan(checkpoints, len(work.prompts), tokens,
                         check_seconds(checkpoints, len(work.prompts), prompt_tokens, tokens, speed, load_seconds,
                                       work.base_cases), base_cases=work.base_cases)

    plan = fit(Plan(budget, dict(spent), stages, checked(stages), between=between), budget)
    cut = [s for s in plan.stages if s.steps < s.full_steps and s.checkpoints > 1]
    if plan.check is not None and cut:
        # Checking a checkpoint costs what tens of steps do, and one halfway through a shortened schedule
        # (its learning rate still high) is rarely the best: a cut stage keeps only its last checkpoint.
        for stage in cut:
            stage.last_only = True
        plan = fit(Plan(budget, dict(spent), stages, checked(stages), between=between), budget)
    if plan.check is not None:  # what one more checkpoint adds to the check, should a stage get its checkpoints back
        plan.check.one_more = check_seconds(plan.check.checkpoints + 1, plan.check.cases, prompt_tokens,
                                            plan.check.tokens, speed, load_seconds, plan.check.base_cases) - plan.check.seconds
    return plan
