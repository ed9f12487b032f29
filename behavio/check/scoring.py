"""Scoring: every rule of every check case on a response, summed up into a Scorecard (no model needed)."""

from __future__ import annotations

from behavio import kinds
from behavio.check.cases import CheckCase
from behavio.check.responses import Responses
from behavio.check.scorecard import CaseResult, RuleVerdict, Scorecard
from behavio.errors import BehavioError


def score_case(case: CheckCase, response: str | None, finished: bool = True) -> CaseResult:
    """Every rule of ``case`` on ``response`` (a missing response fails every rule)."""
    verdicts = []
    for rule in case.rules:
        tags = case.rule_tags(rule)
        if response is None:
            verdicts.append(RuleVerdict(rule.behavior, rule.name, False, 0.0, "no response for this case", rule.line,
                                        rule.part, tags))
            continue
        try:
            result = kinds.score_rule(rule.kind, response, rule.args, case, finished)
        except KeyError as exc:
            raise BehavioError(f"check case {case.id}: {exc.args[0]}") from None
        verdicts.append(RuleVerdict(rule.behavior, rule.name, result.passed, float(result.score), result.explanation,
                                    rule.line, rule.part, tags))
    return CaseResult(id=case.id, split=case.split, prompt_set=case.prompt_set, prompt=case.prompt,
                      response=response, finished=finished, verdicts=verdicts)


def prewarm_embeddings(cases: list[CheckCase], responses: Responses, batch: int = 32) -> None:
    """Embed every text the semantic rules will compare in a few length-sorted batches (the rules
    then hit the embedding cache) instead of one model call per text."""
    from behavio import embeddings

    texts: set[str] = set()
    for case in cases:
        response = responses.response_for(case)
        if response is None or not response.strip():
            continue
        for rule in case.rules:
            if rule.kind in kinds.all_kinds():
                texts |= kinds.get(rule.kind).embedding_texts(rule.args, case, response)
    if not texts or not embeddings.available():
        return
    ordered = sorted(texts, key=len)
    for start in range(0, len(ordered), batch):
        embeddings.embed(ordered[start:start + batch])


def score_cases(cases: list[CheckCase], responses: Responses, spec_thresholds: dict, *,
                label: str = "responses", step: int | None = None, stage: str | None = None,
                meta: dict | None = None) -> Scorecard:
    """Score ``responses`` to ``cases`` against the spec's thresholds (line -> Threshold or minimum pass rate)."""
    prewarm_embeddings(cases, responses)
    results = [score_case(c, responses.response_for(c), responses.finished(c)) for c in cases]
    return Scorecard(label=label, thresholds=dict(spec_thresholds), cases=results, step=step, stage=stage, meta=meta or {})
