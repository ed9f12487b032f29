"""Checking: a spec's check cases answered by a model (or read from a file) and scored rule by rule.

Public names (imported lazily, so ``import behavio.check`` loads no model code)::

    from behavio.check import load_check_spec, score_cases, check_model, check_run, read_responses
"""

from __future__ import annotations

from behavio.lazy import exporter

_EXPORTS = {
    "CheckCase": "cases", "Rule": "cases", "CheckSpec": "cases", "load_check_spec": "cases", "load_cases": "cases",
    "score_case": "scoring", "score_cases": "scoring",
    "Responses": "responses", "read_responses": "responses",
    "Scorecard": "scorecard", "CaseResult": "scorecard", "RuleVerdict": "scorecard", "Rate": "scorecard",
    "pick_best": "scorecard", "wilson": "scorecard",
    "check_model": "engine", "check_checkpoints": "engine", "check_run": "engine", "responses_from_model": "engine",
    "RunReport": "engine",
    "write_run_outputs": "report",
}
__all__ = sorted(_EXPORTS)

__getattr__ = exporter("behavio.check", _EXPORTS)
