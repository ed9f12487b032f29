"""Training data: pick the rows, fill pending answers, write ``data/``, tokenize and validate.

Everything that can go wrong with the data (an assistant turn cut by ``max_length``, nothing to
train, a template that writes no end-of-turn marker) fails here, before any training step.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from behavio.chat import prepare_messages, tokenize_with_assistant_mask
from behavio.check.cases import scoped_behaviors
from behavio.errors import BehavioError
from behavio.jsonio import parse_jsonl, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

    from behavio.compiler.build import Compiled
    from behavio.compiler.proof import Failure
    from behavio.train.config import TrainConfig

SPLITS = ("sft", "sft.val", "dpo", "dpo.val")
RESCUE_RETRIES = 2  # asks again, with fill_retries: 0, for a set the fill would otherwise lose (see ask_again)
MAX_LISTED_ERRORS = 5


def select_pairs(rows: list[dict], limit: int | None, seed: int) -> list[dict]:
    """At most ``limit`` pairs, round-robin over (behavior, violation) groups in seeded order."""
    if limit is None or len(rows) <= limit:
        return list(rows)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row.get("behavior"), row.get("violation"))].append(row)
    rng = random.Random(seed)
    queues = [rng.sample(group, len(group)) for _, group in sorted(groups.items(), key=lambda kv: str(kv[0]))]
    picked: list[dict] = []
    while len(picked) < limit:
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop())
    rng.shuffle(picked)
    return picked


def sample_rows(rows: list[dict], limit: int, seed: int) -> list[dict]:
    """A seeded sample of at most ``limit`` rows, in their original order."""
    if len(rows) <= limit:
        return list(rows)
    keep = set(random.Random(seed).sample(range(len(rows)), limit))
    return [r for i, r in enumerate(rows) if i in keep]


def pick_rows(compiled: Compiled, cfg: TrainConfig) -> dict[str, list[dict]]:
    """The rows of each split that this run trains and evaluates on (DPO pairs and val capped)."""
    rows = {name: parse_jsonl(compiled.files[f"{name}.jsonl"]) for name in SPLITS}
    rows["dpo"] = select_pairs(rows["dpo"], cfg.dpo_max_pairs, cfg.seed)
    rows["sft.val"] = sample_rows(rows["sft.val"], cfg.eval_max_rows, cfg.seed)
    rows["dpo.val"] = select_pairs(rows["dpo.val"], cfg.eval_max_rows, cfg.seed)
    if "sft" not in cfg.method:
        rows["sft"], rows["sft.val"] = [], []
    if "dpo" not in cfg.method:
        rows["dpo"], rows["dpo.val"] = [], []
    return rows


def fill_and_write(compiled: Compiled, cfg: TrainConfig, base_model: Path, data_dir: Path, *, quiet: bool = False,
                   say: Callable[[str], None] = lambda _: None) -> dict[str, list[dict]]:
    """Fill the pending answers these rows need (batched, greedy, cached) and write ``data_dir/<split>.jsonl``.

    Under a launcher every process calls it: each writes its share of the answers, the main process
    writes the files.
    """
    from behavio import distributed, embeddings
    from behavio.compiler.proof import HEAVY_LOSS, failed_answers, judge_filled
    from behavio.fill import fill_pending, run_fill_settings

    rows = pick_rows(compiled, cfg)
    needed = {key for split in rows.values() for row in split for key in row.get("pending", [])}
    pending = [p for p in parse_jsonl(compiled.files["pending.jsonl"]) if p["key"] in needed]
    if cfg.fill_system == "none":
        pending = [without_system(p) for p in pending]
    if pending:
        processes = f", shared by {distributed.size()} processes" if distributed.size() > 1 else ""
        say(f"fill: {len(pending)} answer bodies from {base_model.name} (cached after the first run{processes})")
    answers = fill_pending(pending, str(base_model), quiet=quiet, **run_fill_settings(cfg))
    semantic = embeddings.available()
    failed = failed_answers(rows, answers, semantic=semantic)
    failed = ask_again(pending, answers, failed, rows, cfg, base_model, semantic=semantic, say=say)
    verdict = judge_filled(compiled.spec, rows, answers, semantic=semantic, failed=failed)
    if verdict.dropped:
        say(f"fill: dropped {len(verdict.dropped)} answers the base model wrote that break their own rules "
            f"(answers.<set>.on_failure: drop); first: {verdict.dropped[0]}")
    if verdict.heavy_losses():
        say(f"warning: the fill dropped more than {HEAVY_LOSS:.0%} of the answers of {', '.join(verdict.heavy_losses())}: "
            "those sets train on fewer answers than the spec shows (the base model breaks their rules itself, e.g. refuses "
            "them); a model that refuses a set's questions often does not know their answers and makes up the ones it "
            "writes (a shop's own delivery policy), so read a few kept ones in data/sft.jsonl; give such sets literal "
            "or file answers, or reword their prompts; the dropped ones are in data/fill.dropped.jsonl")
    if distributed.is_main():
        data_dir.mkdir(parents=True, exist_ok=True)
        for name, split in verdict.rows.items():
            write_jsonl(data_dir / f"{name}.jsonl", split)
        write_jsonl(data_dir / "fill.dropped.jsonl", [{"why": why} for why in verdict.dropped])
    return verdict.rows


def without_system(row: dict) -> dict:
    """A pending answer's row asked without the spec's system message (``train.fill_system: none``): the base model
    answers under its own default; the key, and so the training row the answer goes into, stay the same."""
    return {**row, "messages": [m for m in row["messages"] if m.get("role") != "system"]}


def ask_again(pending: list[dict], answers: dict[str, str], failed: dict[str, Failure], rows: dict[str, list[dict]],
              cfg: TrainConfig, base_model: Path, *, semantic: bool,
              say: Callable[[str], None] = lambda _: None) -> dict[str, Failure]:
    """Ask the base model again, up to ``cfg.fill_retries`` times, for the answers in ``failed`` (pending key ->
    :class:`~behavio.compiler.proof.Failure`, the answers that broke their rows' rules), each time opening with its
    next choice of first token; ``answers`` is updated in place. Returns the answers that still fail. An answer
    another conversation continues from (an earlier turn) is kept as it was, so that conversation's later answers
    still follow from it.

    With ``fill_retries: 0`` some are asked again :data:`RESCUE_RETRIES` times all the same (:func:`rescued`): the
    answers of a set that would lose more than :data:`~behavio.compiler.proof.FATAL_LOSS` of them, which stops the
    run, and with ``fill_rescue: refusals`` the base model's own refusals of prompts a refusal's contrast answers."""
    from behavio.compiler.proof import failed_answers, fatal_sets
    from behavio.fill import refill_pending, run_fill_settings
    from behavio.pending import keys_in

    fatal = set() if cfg.fill_retries else fatal_sets(rows, failed)
    todo = set(failed) if cfg.fill_retries else rescued(failed, fatal, cfg)
    retries = cfg.fill_retries or (RESCUE_RETRIES if todo else 0)
    if not retries or not todo:
        return failed
    context = {k for row in pending for m in row["messages"] for k in keys_in(m.get("content") or "")}
    first = {k: failed[k] for k in todo}
    for choice in range(1, retries + 1):
        again = [row for row in pending if row["key"] in failed and row["key"] in todo and row["key"] not in context]
        if not again:
            break
        answers.update(refill_pending(again, answers, str(base_model), choice=choice, **run_fill_settings(cfg)))
        done = {row["key"] for row in again}
        failed = {**{k: v for k, v in failed.items() if k not in done},
                  **failed_answers(rows, answers, semantic=semantic, keys=done)}
    for line in _asked_again_lines(first, failed, fatal, cfg):
        say(line)
    return failed


def rescued(failed: dict[str, Failure], fatal: set[str], cfg: TrainConfig) -> set[str]:
    """The failing answers asked again under ``fill_retries: 0``: every one of the ``fatal`` sets, which would lose
    more than :data:`~behavio.compiler.proof.FATAL_LOSS` of their answers (and stop the run), and with ``fill_rescue:
    refusals`` every answer the base model refused where a refusal's contrast must answer: dropped, those near
    misses are the very rows that teach the refusal's boundary, so a spec whose base model refuses them trains on
    the refusal's side alone (bench/SPEC_QUALITY.md, session 27)."""
    from behavio.compiler.proof import REFUSED_NEAR_MISS

    return {k for k, f in failed.items()
            if f.prompt_set in fatal or (cfg.fill_rescue == "refusals" and f.rule == REFUSED_NEAR_MISS)}


def _asked_again_lines(first: dict[str, Failure], still: dict[str, Failure], fatal: set[str],
                       cfg: TrainConfig) -> list[str]:
    """What asking again did, for the run's log: one line per reason the answers in ``first`` were asked again
    (``fatal``: the sets asked again because they would stop the run)."""
    from behavio.compiler.proof import FATAL_LOSS

    def passed(keys: set[str]) -> int:
        return len(keys - set(still))

    if cfg.fill_retries:
        return [f"fill: {len(first)} answers the base model wrote broke their rules; asked again with its next choice of "
                f"opening word (train.fill_retries: {cfg.fill_retries}), {passed(set(first))} of them now pass"]
    lines = []
    if fatal:
        keys = {k for k, f in first.items() if f.prompt_set in fatal}
        lines.append(f"fill: {', '.join(sorted(fatal))} would lose more than {FATAL_LOSS:.0%} of their answers to the base "
                     f"model's own refusals and slips, which stops the run; asked again for them with its next choice of "
                     f"opening word ({RESCUE_RETRIES} times, as train.fill_retries does): {passed(keys)} of their "
                     f"{len(keys)} failing answers now pass")
    near = {k for k, f in first.items() if f.prompt_set not in fatal}
    if near:
        lines.append(f"fill: the base model refused {len(near)} prompts a refusal's contrast answers (its near misses); "
                     f"asked again with its next choice of opening word ({RESCUE_RETRIES} times, train.fill_rescue: "
                     f"refusals): {passed(near)} of them now pass")
    return lines


def read_data(data_dir: Path) -> dict[str, list[dict]]:
    """The rows a run trains on, as written by :func:`fill_and_write`."""
    out = {}
    for name in SPLITS:
        out[name] = read_jsonl(data_dir / f"{name}.jsonl", hint="this run directory was not fully set up (start a new run)")
    return out


# ---------------------------------------------------------------------------------------------
# Tokenization (validated before training)
# ---------------------------------------------------------------------------------------------


def _collect(rows: list[dict], encode: Callable[[dict], dict], what: str) -> list[dict]:
    out, errors = [], []
    for row in rows:
        try:
            out.append(encode(row))
        except BehavioError as exc:
            errors.append(str(exc))
    if errors:
        shown = errors[:MAX_LISTED_ERRORS]
        more = f"\n... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        raise BehavioError(f"{len(errors)} of {len(rows)} {what} cannot be trained:\n" + "\n".join(shown) + more)
    return out


def sft_features(rows: list[dict], tokenizer: PreTrainedTokenizerBase, cfg: TrainConfig, what: str = "SFT examples") -> list[dict]:
    """``input_ids`` + ``labels`` (-100 off the assistant turns) for each SFT row; BehavioError before training."""

    def encode(row: dict) -> dict:
        tokens = tokenize_with_assistant_mask(row["messages"], tokenizer, cfg.max_length, fold=cfg.fold_system,
                                              example_id=row.get("id"))
        return {"input_ids": tokens["input_ids"], "labels": tokens["labels"]}

    return _collect(rows, encode, what)


def sft_dataset(rows: list[dict], tokenizer: PreTrainedTokenizerBase, cfg: TrainConfig, what: str = "SFT examples") -> Dataset:
    from datasets import Dataset

    return Dataset.from_list(sft_features(rows, tokenizer, cfg, what))


def refusal_openings(rows: list[dict], labels: list[list[int]]) -> list[int]:
    """The first trained token of every SFT row a refusal rule wants refused: how the spec's refusals open, as
    the model is trained on them (``labels``: each row's, -100 off the trained tokens)."""
    return _first_trained_tokens(rows, labels, lambda r: r.get("kind") == "refusal"
                                 and r.get("args", {}).get("expect") == "refuse")


def scoped_openings(rows: list[dict], labels: list[list[int]]) -> list[int]:
    """The first trained token of every SFT row that opens with a sentence scoped to some sets (a prefix or header
    whose rules expect it absent elsewhere, ``<id>/elsewhere``): how those sentences open, as trained."""
    scoped = scoped_behaviors(rows)
    return _first_trained_tokens(rows, labels, lambda r: r.get("behavior") in scoped and _present_opening(r))


OPENING_KINDS = ("prefix", "header")  # kinds whose sentence opens the answer (a sign-off closes it)
MAX_OPENING_TOKENS = 96  # an opening sentence longer than this is not looked for


def _rule_choices(row: dict, wanted) -> list[str]:
    """The stripped, non-empty sentence choices of the row's rules for which ``wanted(rule)`` holds."""
    return [c.strip() for rule in row.get("rules", []) if wanted(rule)
            for c in rule.get("args", {}).get("choices", []) if c.strip()]


def _present_opening(rule: dict) -> bool:
    """A rule that wants a prefix or header sentence present at the start of this row's answer."""
    return (rule.get("kind") in OPENING_KINDS and not rule.get("part")
            and rule.get("args", {}).get("expect") == "present")


def answer_openings(rows: list[dict], labels: list[list[int]], tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """How each opening sentence (a prefix or header the row's rules expect present) is trained where an answer
    opens with it: the answer's first trained tokens up to the end of the sentence, each distinct sequence once
    (``train.anchor_without_opening``). Found by the decoded text; a sentence whose last token also holds what
    follows it (a tokenizer that merges ".\n\n") ends on no token boundary and is not found."""
    found: set[tuple[int, ...]] = set()
    for row, row_labels in zip(rows, labels):
        choices = _rule_choices(row, _present_opening)
        trained = [t for t in row_labels if t != -100]
        for k in range(1, min(len(trained), MAX_OPENING_TOKENS) + 1) if choices else ():
            text = tokenizer.decode(trained[:k], skip_special_tokens=True).strip()
            if text in choices:
                found.add(tuple(trained[:k]))
                break
            if not any(c.startswith(text) for c in choices):
                break
    return [list(t) for t in sorted(found)]


def long_answers(rows: list[dict], labels: list[list[int]], limit: int) -> list[tuple[int, dict]]:
    """(tokens, row) of every SFT row with an answer longer than ``limit`` trained tokens (its stop token counted;
    each assistant turn on its own): answers a check that lets the model write ``limit`` tokens cuts off."""
    out = []
    for row, row_labels in zip(rows, labels):
        longest = run = 0
        for label in row_labels:
            run = run + 1 if label != -100 else 0
            longest = max(longest, run)
        if longest > limit:
            out.append((longest, row))
    return out


def long_answers_warning(rows: list[dict], labels: list[list[int]], limit: int | None) -> str | None:
    """What to tell the user when training answers run longer than the check lets an answer write (``limit``
    tokens): how many, the longest and the prompt sets they are in (``None`` when none do, or without a limit)."""
    long = long_answers(rows, labels, limit) if limit else []
    if not long:
        return None
    tokens, row = max(long, key=lambda found: found[0])
    sets_named = ", ".join(dict.fromkeys(r.get("prompt_set", "?") for _, r in long))
    return (f"{len(long)} training answer(s) run longer than the check lets an answer write "
            f"(check.max_new_tokens={limit} tokens, the stop token counted; the longest, {tokens} tokens, in "
            f"prompt set {row.get('prompt_set', '?')!r}; sets: {sets_named}): the model learns answers the check cuts "
            "off, and an unfinished answer fails no_repetition; shorten them or raise check.max_new_tokens")


def scoped_closings(rows: list[dict], labels: list[list[int]], tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """How each sign-off scoped to some sets (``<id>/elsewhere`` rules) is trained where an answer ends with it: the
    tokens from the end of the body (its separator, or the token the separator shares with the body's last
    character, as Llama 3 writes ".\n\n") to the end of the answer, each distinct sequence once. An answer decides
    there whether it ends with the sign-off, as it decides at its first tokens whether to open with a prefix
    (``train.opening_weight`` weighs both). Found by the decoded text, so any tokenizer and separator will do."""
    scoped = scoped_behaviors(rows)
    found: set[tuple[int, ...]] = set()
    for row, row_labels in zip(rows, labels):
        choices = _rule_choices(row, lambda rule: rule.get("behavior") in scoped and rule.get("kind") == "sign_off"
                                and not rule.get("part"))
        if choices:
            form = _closing_tokens([t for t in row_labels if t != -100], choices, tokenizer)
            if form:
                found.add(tuple(form))
    return [list(t) for t in sorted(found)]


def _closing_tokens(trained: list[int], choices: list[str], tokenizer: PreTrainedTokenizerBase) -> list[int] | None:
    """The trained tokens from where the body ends to the end of the answer, when it ends with one of ``choices``."""
    def text(tokens: list[int]) -> str:
        return tokenizer.decode(tokens, skip_special_tokens=True)

    end = len(trained)
    while end and not text(trained[end - 1:end]).strip():
        end -= 1  # the stop token and whatever the chat template closes a turn with
    tail = text(trained[:end]).rstrip()
    choice = next((c for c in choices if tail.endswith(c)), None)
    if choice is None:
        return None
    start = end - 1
    while start > 0 and choice not in text(trained[start:end]):
        start -= 1  # the first token holding part of the sign-off
    while start > 0:
        before = text(trained[start - 1:start])
        if before == before.rstrip():
            break  # the body's own last token
        start -= 1  # a separator token ("\n\n", or "\n" twice), or one the body's last character shares
        if before.strip():
            break
    return trained[start:end] if start > 0 else None


def _first_trained_tokens(rows: list[dict], labels: list[list[int]], rule_matches) -> list[int]:
    """The first trained token of every row with a rule ``rule_matches``, sorted, each once."""
    out = set()
    for row, row_labels in zip(rows, labels):
        trained = [t for t in row_labels if t != -100]
        if trained and any(rule_matches(r) for r in row.get("rules", [])):
            out.add(trained[0])
    return sorted(out)


def dpo_records(rows: list[dict], tokenizer: PreTrainedTokenizerBase, cfg: TrainConfig, what: str = "DPO pairs") -> list[dict]:
    """TRL preference rows with the system message folded like SFT and checks; each side validated.

    ``rejected_open``: the rejected answer was cut before it ended, so DPO trains it without the
    end of turn the chat template closes it with (:func:`behavio.train.dpo.dpo_trainer_class`).
    """

    def encode(row: dict) -> dict:
        for side in ("chosen", "rejected"):
            tokenize_with_assistant_mask(row["prompt"] + row[side], tokenizer, cfg.max_length, fold=cfg.fold_system,
                                         example_id=f"{row.get('id')} ({side})")
        return {"prompt": prepare_messages(row["prompt"], tokenizer, cfg.fold_system),
                "chosen": row["chosen"], "rejected": row["rejected"],
                "rejected_open": not row.get("rejected_finished", True)}

    return _collect(rows, encode, what)


def dpo_dataset(rows: list[dict], tokenizer: PreTrainedTokenizerBase, cfg: TrainConfig, what: str = "DPO pairs") -> Dataset:
    from datasets import Dataset

    return Dataset.from_list(dpo_records(rows, tokenizer, cfg, what))
