"""The ``behavio/spec`` Inspect task: ``inspect eval behavio/spec --model PROVIDER/MODEL -T spec=specs/x.yaml``.

Every check case and probe of the spec (compiled in memory, never stale files) becomes a sample
whose id is the case id; the model answers greedily (temperature 0) within the spec's token
budget (``check.max_new_tokens``), and :mod:`behavio.inspect_eval.scorers` scores the answer, one
scorer per scorecard line.
The system message is folded into the first user turn when ``-T fold_system=true`` or the
spec's ``train.fold_system`` is true (a template without a system role); else it is sent as a
system message for the provider to place.
"""

from __future__ import annotations

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessage, ChatMessageAssistant, ChatMessageSystem, ChatMessageUser, GenerateConfig
from inspect_ai.solver import generate

from behavio.check.cases import CheckSpec, load_check_spec
from behavio.check.thresholds import resolve
from behavio.check.system_message import Folding, spec_fold_system
from behavio.inspect_eval.scorers import CASE_KEY, line_scorer

_MESSAGE_TYPES = {"system": ChatMessageSystem, "user": ChatMessageUser, "assistant": ChatMessageAssistant}


@task
def spec(spec: str, fold_system: bool | None = None) -> Task:
    """A spec's check suite, scored by behavio's rules (one scorer per scorecard line).

    Args:
        spec: Path of the spec file (YAML).
        fold_system: Fold the system message into the first user turn; default: the spec's
            ``train.fold_system`` when true or false, else no folding.
    """
    check = load_check_spec(spec)
    fold = spec_fold_system(check.path) if fold_system is None else fold_system
    folding = Folding(bool(fold), "task argument fold_system or the spec's train.fold_system")
    samples = [Sample(id=case.id, input=_messages(folding.messages(case.messages)),
                      metadata={CASE_KEY: case.to_dict(), "split": case.split, "prompt_set": case.prompt_set})
               for case in check.cases]
    return Task(dataset=MemoryDataset(samples, name=check.id), solver=generate(),
                scorer=[line_scorer(line, resolve(check.thresholds, line), check.max_new_tokens)
                        for line in scorecard_lines(check)],
                config=GenerateConfig(temperature=0.0, max_tokens=check.max_new_tokens),
                metadata={"spec": check.id, "spec_sha256": check.spec_sha256, "checks_sha256": check.checks_sha256,
                          "thresholds": {line: t.to_dict() for line, t in check.thresholds.items()},
                          "fold_system": folding.fold})


def scorecard_lines(check: CheckSpec) -> list[str]:
    """Every line the spec's scorecard has: those with thresholds first, then the rest in case order."""
    lines = list(check.thresholds) + [rule.line for case in check.cases for rule in case.rules]
    return [line for line in dict.fromkeys(lines) if line != "default"]


def _messages(messages: list[dict]) -> list[ChatMessage]:
    return [_MESSAGE_TYPES[m["role"]](content=m["content"]) for m in messages]
