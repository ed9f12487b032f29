"""Compile proves its own data: every answer it trains on passes its row's rules, every DPO rejection breaks one.

The same scorers the check uses judge the training data, so a spec whose answers break its own rules
(literal answers without the required sections, a ``starts_with`` the answers do not start with) is an
error at the spec location that wrote them, and a DPO pair whose rejected side does not break the rule
it claims is never written. Answers the base model writes (``source: model``) are judged the same way
right after they are filled (:func:`judge_filled`), and, whatever the spec's rules, a body the base model wrote
that is courtesy alone ("I'm sorry for your loss. I'm here to help with any questions.") is never trained on:
it teaches the model to evade (:mod:`behavio.kinds._pleasantries`).

Semantic rules (``on_topic``, a paraphrased refusal: the ones that need the embedding model) are not
judged at compile time: compile stays fast and deterministic. After a fill they are judged when the
embedding model is installed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from behavio import kinds, pending
from behavio.check.cases import CheckCase, Rule
from behavio.kinds._pleasantries import non_answer


@dataclass(frozen=True)
class Broken:
    """A rule an answer breaks, and why."""

    rule: Rule
    explanation: str


def is_semantic(rule: Rule, case: CheckCase, text: str) -> bool:
    """Whether judging ``rule`` on ``text`` needs sentence embeddings."""
    kind = kinds.all_kinds().get(rule.kind)
    return bool(kind and kind.embedding_texts(rule.args, case, text or "x"))


def broken_rules(rules: list[Rule], messages: list[dict], text: str, *, semantic: bool = False) -> list[Broken]:
    """The rules ``text`` (an answer to ``messages``) breaks; semantic rules only when ``semantic``."""
    case = CheckCase(id="proof", messages=messages, rules=rules)
    out = []
    for rule in rules:
        if not semantic and is_semantic(rule, case, text):
            continue
        result = kinds.score_rule(rule.kind, text, rule.args, case, True)
        if not result.passed:
            out.append(Broken(rule, result.explanation))
    return out


def rejection_breaks(rules: list[Rule], messages: list[dict], rejected: str, *, semantic: bool = False) -> bool | None:
    """Whether a DPO rejection breaks one of ``rules`` (its behavior's rules on the row).

    None when it cannot be judged yet: it holds a pending marker, or every rule is semantic and
    ``semantic`` is off. An empty rejection never counts as breaking a rule: there is nothing to prefer over.
    """
    if not rejected.strip():
        return False
    if pending.has_marker(rejected):
        return None
    case = CheckCase(id="proof", messages=messages, rules=rules)
    judged = [r for r in rules if semantic or not is_semantic(r, case, rejected)]
    if not judged:
        return None
    return any(not kinds.score_rule(r.kind, rejected, r.args, case, True).passed for r in judged)


HEAVY_LOSS = 0.2  # a set that loses more of its base-model answers than this is warned about
FATAL_LOSS = 0.9  # one that loses more than this stops the run: it would train on almost nothing


class Failure(NamedTuple):
    """Why the fill would drop one answer the base model wrote: its prompt set, a line for the user, and the name of
    the rule it broke (``refusal:answer``: the base model refused a prompt a refusal's contrast must answer;
    ``non-answer``: pleasantries alone)."""

    prompt_set: str
    why: str
    rule: str


REFUSED_NEAR_MISS = "refusal:answer"  # Failure.rule of an answer the base model refused where a refusal's contrast answers


@dataclass
class FillVerdict:
    """What judging the filled rows kept, one line per answer it dropped, and per prompt set (dropped, answers)."""

    rows: dict[str, list[dict]]
    dropped: list[str]
    losses: dict[str, tuple[int, int]] = field(default_factory=dict)

    def heavy_losses(self, share: float = HEAVY_LOSS) -> list[str]:
        """Sets that lost more than ``share`` of their answers: "ebike_howto 30 of 80" (the run goes on)."""
        return [f"{name} {lost} of {total}" for name, (lost, total) in sorted(self.losses.items())
                if total and lost > share * total]


def failed_answers(rows: dict[str, list[dict]], answers: dict[str, str], *, semantic: bool,
                   keys: set[str] | None = None) -> dict[str, Failure]:
    """The answers the base model wrote (pending bodies, now in ``answers``) that break their SFT rows' rules:
    pending key -> :class:`Failure`. ``keys`` judges only those answers."""
    from behavio.fill import fill_rows

    bad: dict[str, Failure] = {}
    for name in ("sft", "sft.val"):
        for row in rows.get(name, []):
            own = [k for k in pending.keys_in(row["messages"][-1]["content"])  # its answer's, not its context's
                   if k not in bad and (keys is None or k in keys)]
            if not own or "#" in row["id"]:
                continue
            filled = fill_rows([row], answers)[0]
            rules = [Rule.from_dict(r) for r in row.get("rules", [])]
            prompt = filled["messages"][-2]["content"]
            broken = broken_rules(rules, filled["messages"][:-1], filled["messages"][-1]["content"], semantic=semantic)
            if broken:
                why = (f"{row['prompt_set']}: {prompt[:50]!r} breaks {broken[0].rule.line} "
                       f"[{broken[0].rule.name}]: {broken[0].explanation}")
                bad.update({k: Failure(row["prompt_set"], why, broken[0].rule.name) for k in own})
                continue
            for key in own:
                if non_answer(prompt, answers[key]):
                    bad[key] = Failure(row["prompt_set"], f"{row['prompt_set']}: {prompt[:50]!r} is answered with "
                                                          f"pleasantries alone: {answers[key][:60]!r}", "non-answer")
    return bad


def judge_filled(spec, rows: dict[str, list[dict]], answers: dict[str, str], *, semantic: bool,
                 failed: dict[str, Failure] | None = None) -> FillVerdict:
    """Judge answers the base model wrote (pending bodies, now in ``answers``) with their rows' rules
    (``failed``: :func:`failed_answers` already computed for these answers).

    An SFT row whose filled answer breaks a rule is dropped with every row that trains the same body
    (its repeats, the DPO pairs that choose it), or, for a set with ``on_failure: error``, stops the run;
    a set that would lose more than :data:`FATAL_LOSS` of its answers stops it too (answers, not rows: an answer's
    augmented and respelled copies go with it). A DPO pair whose filled rejection does
    not break the rule it claims (``breaks``) is dropped. ``rows`` are unfilled; the kept rows are filled.
    """
    from behavio.errors import BehavioError
    from behavio.fill import fill_rows

    bad = failed_answers(rows, answers, semantic=semantic) if failed is None else failed
    failures: dict[str, list[str]] = {}
    for failure in bad.values():
        failures.setdefault(failure.prompt_set, []).append(failure.why)
    losses = set_losses(rows, bad)
    _stop_if_fatal(spec, losses, failures, BehavioError)
    kept: dict[str, list[dict]] = {}
    for name, split in rows.items():
        if name.startswith("sft"):
            keep = [r for r in split if not set(r.get("pending", [])) & set(bad)]
        else:
            keep = [r for r in split if not set(pending.keys_in(r["chosen"][0]["content"])) & set(bad)]
        filled = fill_rows(keep, answers)
        if name.startswith("dpo"):
            filled = [r for r in filled if rejection_breaks([Rule.from_dict(x) for x in r.get("breaks", [])],
                                                           r["prompt"], r["rejected"][0]["content"],
                                                           semantic=semantic) is not False]
        kept[name] = filled
    return FillVerdict(kept, list(dict.fromkeys(f.why for f in bad.values())), losses)


def set_losses(rows: dict[str, list[dict]], failed: dict[str, Failure]) -> dict[str, tuple[int, int]]:
    """Each prompt set with answers in ``failed`` (pending key -> :class:`Failure`) -> (answers lost, answers it has)."""
    lost = Counter(f.prompt_set for f in failed.values())
    return {name: (n, _answers_of(rows, name)) for name, n in lost.items()}


def fatal_sets(rows: dict[str, list[dict]], failed: dict[str, Failure]) -> set[str]:
    """The prompt sets that would lose more than :data:`FATAL_LOSS` of their answers to ``failed`` (pending key ->
    :class:`Failure`), which stops the run."""
    return {name for name, (lost, answers) in set_losses(rows, failed).items() if is_fatal(lost, answers)}


def is_fatal(lost: int, answers: int) -> bool:
    """True when a set that loses ``lost`` of its ``answers`` answers loses more than :data:`FATAL_LOSS` of them."""
    return answers > 0 and lost > FATAL_LOSS * answers


def _answers_of(rows: dict[str, list[dict]], name: str) -> int:
    """How many answers the base model writes for prompt set ``name`` (SFT and validation): distinct answers, as
    the failures are counted -- a prompt's augmented and respelled copies share its answer."""
    return len({key for r in rows.get("sft", []) + rows.get("sft.val", []) if r["prompt_set"] == name
                for key in pending.keys_in(r["messages"][-1]["content"])})


def _stop_if_fatal(spec, losses: dict[str, tuple[int, int]], failures: dict[str, list[str]], error) -> None:
    """Raise for sets with ``on_failure: error`` that have failures, or that lose more than FATAL_LOSS of their answers
    (``losses``: set -> (answers lost, answers))."""
    problems = []
    for name, found in failures.items():
        source = spec.answers.get(name)
        total = losses[name][1]
        if source is not None and source.on_failure == "error":
            problems.append(str(spec.located.issue(("answers", name), f"{len(found)} answers the base model wrote break "
                                                   f"their rules (on_failure: error); first: {found[0]}")))
        elif is_fatal(len(found), total):
            problems.append(str(spec.located.issue(("answers", name), f"{len(found)} of {total} answers the base model "
                                                   f"wrote break their rules, too many to drop; first: {found[0]}")))
    if problems:
        raise error("\n".join(problems))
