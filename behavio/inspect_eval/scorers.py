"""behavio's rules as Inspect scorers: one per behavior, named after it, scoring every rule of that
behavior on a case exactly as ``behavio check`` does.

A score's value maps each rule (``refusal:refuse``, ``prefix:present``, ...) to 1.0 (passed) or
0.0, its explanation gives each rule's verdict, and a case the behavior does not apply to is
unscored. ``pass_rate`` counts passed (case, rule) pairs like a scorecard's behavior rate, and
``meets_threshold`` is 1.0 when that rate reaches the spec's threshold.

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

from behavio.check.engine import rule_name, score_case

CASE_KEY = "behavio_case"


@metric
def pass_rate() -> Metric:
    """Passed rule verdicts of all verdicts (a scorecard's behavior pass rate)."""

    def rate(scores: list[SampleScore]) -> float:
        verdicts = _verdicts(scores)
        return sum(verdicts) / len(verdicts) if verdicts else float("nan")

    return rate


@metric
def meets_threshold(threshold: float) -> Metric:
    """1.0 when the pass rate reaches ``threshold`` (the spec's), else 0.0."""

    def meets(scores: list[SampleScore]) -> float:
        verdicts = _verdicts(scores)
        return float(not verdicts or sum(verdicts) / len(verdicts) + 1e-12 >= threshold)

    return meets


def _verdicts(scores: list[SampleScore]) -> list[float]:
    return [float(v) for s in scores if isinstance(s.score.value, dict) for v in s.score.value.values()]


def finished(state: TaskState, max_tokens: int) -> bool:
    """False when the model stopped at the token limit: stop reason ``max_tokens``, or, from a provider
    that does not say (``unknown``), as many output tokens as the budget allows."""
    reason = state.output.stop_reason
    if reason == "unknown":
        usage = state.output.usage
        return usage is None or usage.output_tokens < max_tokens
    return reason != "max_tokens"


def behavior_scorer(behavior: str, threshold: float, max_tokens: int) -> Scorer:
    """The scorer of ``behavior``: every rule of it on the case, as ``behavio check`` scores them."""

    @scorer(metrics=[pass_rate(), meets_threshold(threshold)], name=behavior)
    def rules() -> Scorer:
        async def score(state: TaskState, target: Target) -> Score:
            case = state.metadata[CASE_KEY]
            own = [r for r in case["rules"] if r["behavior"] == behavior]
            if not own:
                return Score.unscored(explanation=f"{behavior} does not apply to this case")
            done = finished(state, max_tokens)
            result = score_case({**case, "rules": own}, state.output.completion, done)
            value: dict[str, float] = {}
            for rule, verdict in zip(own, result.verdicts):
                name = rule_name(rule)
                key = name if name not in value else f"{name}#{sum(k.split('#')[0] == name for k in value) + 1}"
                value[key] = 1.0 if verdict.passed else 0.0
            explanation = "\n".join(f"{key}: {'pass' if verdict.passed else 'FAIL'} - {verdict.explanation}"
                                    for key, verdict in zip(value, result.verdicts))
            return Score(value=value, explanation=explanation,
                         metadata={"finished": done, "stop_reason": state.output.stop_reason,
                                   "verdicts": [asdict(v) for v in result.verdicts]})

        return score

    return rules()
