"""On-policy DPO pairs: the SFT model's own mistakes on its training prompts, judged by the spec's rules.

Rule-derived pairs reject what a rule forbids in the abstract: the poodle question answered, the
literal refusal on a beagle question. The SFT model fails in its own way: it compliments and then
answers the poodle question, or refuses the labrador question with "I can't discuss labradors
directly". Between SFT and DPO, behavio asks the SFT adapter the training prompts **phrased as
training never showed them** (:func:`fresh_prompt`: a casual, polite, context or thank-you rewrite
that no training row has, so the pairs come from mistakes on new phrasings, not from prompts the model
already fits), greedy, ``dpo_on_policy_tokens`` tokens, and scores each answer with the row's decision
rules (refusal and prefix: the ones a short answer can be judged by). Every answer that breaks one
becomes a pair: chosen = the spec's answer, rejected = the model's own. The rewrites are the training
family's, never the check family that writes the paraphrase split, so that split stays held out.
The pairs are written to ``data/dpo.on_policy.jsonl``, so a resumed DPO stage trains on the same pairs.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from behavio import kinds
from behavio.check.cases import CheckCase, Rule, last_user_message
from behavio.compiler import rewrites
from behavio.jsonio import read_jsonl, write_json, write_jsonl
from behavio.train.data import sample_rows, select_pairs

if TYPE_CHECKING:
    from behavio.train.config import TrainConfig

FILE = "dpo.on_policy.jsonl"
PROMPTS_PER_PAIR = 4  # prompts answered per DPO pair the run may train on


def candidates(sft_rows: list[dict], limit: int | None, seed: int) -> list[dict]:
    """Training rows with a decision rule (one per prompt, not its repeats), a seeded sample of ``limit``."""
    rows = [r for r in sft_rows if "#" not in r["id"] and _decision_rules(r)]
    return rows if limit is None else sample_rows(rows, limit, seed)


def fresh_prompt(row: dict, trained: set[str]) -> list[dict]:
    """``row``'s prompt with its last user turn phrased as no training row has it (``trained``: the last user
    turns of every training row): the first training-family rewrite that is new; as is when none is."""
    prompt = [dict(m) for m in row["messages"][:-1]]
    turn = max(i for i, m in enumerate(prompt) if m["role"] == "user")
    for index in range(len(rewrites.TRAINING)):
        fresh = rewrites.rewrite(prompt[turn]["content"], rewrites.TRAINING, index, "on-policy")
        if fresh not in trained:
            prompt[turn]["content"] = fresh
            break
    return prompt


def _decision_rules(row: dict) -> list[Rule]:
    """The row's rules that a short, possibly truncated answer can be judged by (their kinds say so)."""
    judged = {name for name, kind in kinds.all_kinds().items() if kind.judged_early}
    return [Rule.from_dict(r) for r in row.get("rules", []) if r["kind"] in judged]


def judge(row: dict, answer: str, finished: bool) -> dict | None:
    """The first decision rule ``answer`` breaks (``None`` when it passes them all)."""
    from behavio.check.scoring import score_case

    case = CheckCase(id=row["id"], messages=row["messages"][:-1], rules=_decision_rules(row))
    result = score_case(case, answer, finished)
    failed = next((v for v in result.verdicts if not v.passed), None)
    return None if failed is None else {"behavior": failed.behavior, "rule": failed.rule}


def pair(row: dict, answer: str, failed: dict, finished: bool = True, prompt: list[dict] | None = None) -> dict:
    """chosen = the spec's answer to ``row``'s prompt, rejected = the model's own ``answer`` to ``prompt`` (the
    prompt it was asked: ``row``'s own, or a fresh phrasing of it).

    An answer cut at ``dpo_on_policy_tokens`` is marked ``rejected_finished: false``: DPO rejects
    its text, not an end of turn after it (:mod:`behavio.train.dpo`).
    """
    return {
        "id": f"{row['id']}/{failed['behavior']}/own:{failed['rule']}",
        "prompt": prompt if prompt is not None else row["messages"][:-1],
        "chosen": [row["messages"][-1]],
        "rejected": [{"role": "assistant", "content": answer}],
        "behavior": failed["behavior"],
        "violation": f"own:{failed['rule']}",
        "prompt_set": row.get("prompt_set"),
        "rejected_finished": finished,
    }


def make_pairs(model, tokenizer, sft_rows: list[dict], cfg: TrainConfig, *, quiet: bool = False,
               say: Callable[[str], None] = lambda _: None) -> tuple[list[dict], dict]:
    """Answer the candidate prompts with ``model``; the pairs its failing answers make, and a summary.

    Under a launcher every process answers its share of the prompts and all get every answer.
    """
    from behavio import distributed
    from behavio.generate import generate

    limit = cfg.dpo_max_pairs * PROMPTS_PER_PAIR if cfg.dpo_max_pairs else None
    rows = candidates(sft_rows, limit, cfg.seed)
    if not rows:
        say("on-policy: no training prompt has a refusal or prefix rule to judge an answer by; "
            "DPO trains on the rule-derived pairs")
        return [], {"answered": 0, "pairs": 0, "empty": 0, "broken": {}}
    trained = {last_user_message(r["messages"][:-1]) for r in sft_rows}
    prompts = [fresh_prompt(r, trained) for r in rows]
    was_training = model.training
    model.eval()
    try:
        mine = generate(model, tokenizer, distributed.share(prompts),
                        max_new_tokens=cfg.dpo_on_policy_tokens, batch_size=cfg.fill_batch_size, fold=cfg.fold_system,
                        label="on-policy answers", quiet=quiet)
    finally:
        model.train(was_training)
    answers = distributed.unshare(distributed.gather(mine))
    pairs, broken, empty = [], Counter(), 0
    for row, prompt, answer in zip(rows, prompts, answers):
        if not answer.text.strip():  # nothing but special tokens: no text to prefer the spec's answer over
            empty += 1
            continue
        failed = judge(row, answer.text, answer.finished)
        if failed is not None:
            pairs.append(pair(row, answer.text, failed, answer.finished, prompt))
            broken[f"{failed['behavior']} {failed['rule']}"] += 1
    summary = {"answered": len(rows), "pairs": len(pairs), "empty": empty, "broken": dict(sorted(broken.items()))}
    detail = ", ".join(f"{k} {v}" for k, v in summary["broken"].items()) or "none"
    skipped = f"; {empty} empty answers skipped" if empty else ""
    say(f"on-policy: {len(pairs)} of {len(rows)} answers of the SFT model to fresh phrasings of its training prompts "
        f"break a rule ({detail}){skipped}")
    return pairs, summary


def write_pairs(data_dir: Path, pairs: list[dict], summary: dict) -> None:
    """``data/dpo.on_policy.jsonl`` (atomically, the summary last: its presence marks the file complete)."""
    write_jsonl(data_dir / FILE, pairs)
    write_json(data_dir / "dpo.on_policy.json", summary)


def read_pairs(data_dir: Path) -> list[dict] | None:
    """The pairs written by :func:`write_pairs`, or ``None`` if they were never completely written."""
    if not (data_dir / "dpo.on_policy.json").is_file() or not (data_dir / FILE).is_file():
        return None
    return read_jsonl(data_dir / FILE)


def lesson(pair: dict) -> tuple[str, str]:
    """(behavior, rule) a pair teaches: ``("no-poodles", "refusal:answer")`` for an over-refusal.

    A rule-derived violation maps to its rule through the kinds' ``lessons``; an own failure names its rule.
    """
    violation = pair.get("violation") or ""
    lessons = {v: r for kind in kinds.all_kinds().values() for v, r in kind.lessons.items()}
    rule = violation[4:] if violation.startswith("own:") else lessons.get(violation, violation)
    return str(pair.get("behavior")), rule


def training_pairs(own: list[dict], rule_pairs: list[dict], limit: int | None, seed: int) -> list[dict]:
    """The DPO set: the model's own failures, balanced between a behavior's opposite lessons; rule pairs fill the rest.

    A set of mostly "refuse here" pairs mostly moves the model's bias towards refusing everything:
    on the poodle spec (attention-only LoRA), 6 DPO steps on 39 answered-poodle and 18 over-refusal
    pairs took the probes' poodle refusal from 5/20 to 18/20 and over-refusal from 7/40 to 33/40.
    So every lesson of a behavior the model broke (refuse and answer) gets as many pairs as its
    largest count of own failures, its own first, topped up with rule pairs teaching the same; when
    that exceeds ``limit`` each is cut by the same factor. Rule pairs of the behaviors the model did
    not break fill the room left.
    """
    rng = random.Random(seed)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for p in rng.sample(own, len(own)) + rng.sample(rule_pairs, len(rule_pairs)):
        groups[lesson(p)].append(p)
    own_ids = {p["id"] for p in own}
    plan: dict[tuple[str, str], int] = {}
    for behavior in sorted({lesson(p)[0] for p in own}):
        sides = [key for key in sorted(groups) if key[0] == behavior]
        wanted = max(sum(p["id"] in own_ids for p in groups[key]) for key in sides)
        for key in sides:  # a lone side holds all ``wanted`` of its own, so it keeps them all
            plan[key] = min(wanted, min(len(groups[k]) for k in sides))
    total = sum(plan.values())
    if limit is not None and total > limit:
        plan = {key: n * limit // total for key, n in plan.items()}
    picked = [p for key, n in plan.items() for p in groups[key][:n]]
    rest = [p for key, group in groups.items() if key not in plan for p in group]  # behaviors the model kept
    room = None if limit is None else limit - len(picked)
    mixed = picked + select_pairs(rest, room, seed)
    rng.shuffle(mixed)
    return mixed

