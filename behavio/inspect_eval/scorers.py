"""behavio's rules as Inspect scorers: one per scorecard line (a behavior, or a part of one such as
``no-poodles/contrast``, named ``no-poodles:contrast`` in Inspect), scoring that line's rules on a
case exactly as ``behavio check`` does.

A score's value maps each rule (``refusal:refuse``, ``prefix:present``, ...) to 1.0 (passed) or
0.0, its explanation gives each rule's verdict, and a case the line does not apply to is unscored.
The metrics are the scorecard's, computed by :class:`behavio.check.scorecard.Scorecard` from the
verdicts the scores carry: ``pass_rate`` (over the held-out cases -- check, subject, paraphrase, probe --
or, for a line with none, template recall) and ``meets_threshold`` (1.0 when the line meets the
spec's threshold: a rate, a Wilson lower bound, a failure budget).

An answer the model stopped at the token limit (Inspect's stop reason ``max_tokens``) counts as
unfinished, which the ``no_repetition`` rule fails. A provider that does not say why it stopped
(``unknown``: Inspect's ``hf`` provider) is judged by its output token count; ``hf`` reports a
batch's widest output for every answer in it, so run it with ``--max-connections 1`` for exact
flags (a short answer batched with a cut one otherwise counts as cut).
"""

from __future__ import annotations

from dataclasses import asdict

from inspect_ai.scorer import Metric, SampleScore, Score, Scorer, Target, metric, scorer
from inspect_ai.solver import TaskState

from behavio.check.cases import CheckCase
from behavio.check.scorecard import CaseResult, RuleVerdict, Scorecard
from behavio.check.scoring import score_case
from behavio.check.thresholds import Threshold

CASE_KEY = "behavio_case"


def scorer_name(line: str) -> str:
    """Inspect's name for a scorecard line (a ``/`` would read as a package prefix there)."""
    return line.replace("/", ":")


def line_card(scores: list[SampleScore], line: str, threshold: Threshold) -> Scorecard:
    """The scored samples of one line as a behavio Scorecard, for its rates and threshold logic."""
    cases = []
    for sample in scores:
        meta = sample.score.metadata or {}
        if "verdicts" in meta:
            cases.append(CaseResult(id=str(sample.sample_id), split=meta["split"], prompt_set="", prompt="",
                                    response="", finished=meta["finished"],
                                    verdicts=[RuleVerdict(**v) for v in meta["verdicts"]]))
    return Scorecard(label=line, thresholds={line: threshold}, cases=cases)


@metric
def pass_rate(line: str) -> Metric:
    """The line's pass rate, as the scorecard gives it (nan when no case has the line)."""

    def rate(scores: list[SampleScore]) -> float:
        value = line_card(scores, line, Threshold()).line(line).rate
        return float("nan") if value is None else value

    return rate


@metric
def meets_threshold(line: str, threshold: dict) -> Metric:
    """1.0 when the line meets ``threshold`` (the spec's, as ``Threshold.to_dict()``), else 0.0."""

    def meets(scores: list[SampleScore]) -> float:
        return float(line_card(scores, line, Threshold.coerce(threshold)).meets(line))

    return meets


def finished(state: TaskState, max_tokens: int) -> bool:
    """False when the model stopped at the token limit: stop reason ``max_tokens``, or, from a provider
    that does not say (``unknown``), as many output tokens as the budget allows."""
    reason = state.output.stop_reason
    if reason == "unknown":
        usage = state.output.usage
        return usage is None or usage.output_tokens < max_tokens
    return reason != "max_tokens"


def line_scorer(line: str, threshold: Threshold, max_tokens: int) -> Scorer:
    """The scorer of one scorecard line: its rules on the case, as ``behavio check`` scores them."""

    @scorer(metrics=[pass_rate(line), meets_threshold(line, threshold.to_dict())], name=scorer_name(line))
    def rules() -> Scorer:
        async def score(state: TaskState, target: Target) -> Score:
            case = CheckCase.from_dict(state.metadata[CASE_KEY])
            own = [rule for rule in case.rules if rule.line == line]
            if not own:
                return Score.unscored(explanation=f"{line} does not apply to this case")
            done = finished(state, max_tokens)
            result = score_case(CheckCase(case.id, case.messages, own, case.split, case.prompt_set),
                                state.output.completion, done)
            value: dict[str, float] = {}
            for verdict in result.verdicts:
                key, n = verdict.rule, 2
                while key in value:  # two rules of one kind on one line
                    key, n = f"{verdict.rule}#{n}", n + 1
                value[key] = 1.0 if verdict.passed else 0.0
            explanation = "\n".join(f"{key}: {'pass' if v.passed else 'FAIL'} - {v.explanation}"
                                    for key, v in zip(value, result.verdicts))
            return Score(value=value, explanation=explanation,
                         metadata={"line": line, "split": case.split, "finished": done,
                                   "stop_reason": state.output.stop_reason,
                                   "verdicts": [asdict(v) for v in result.verdicts]})

        return score

    return rules()
