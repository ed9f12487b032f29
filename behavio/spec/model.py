"""Typed spec objects, built from YAML data that already passed the JSON Schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from behavio.spec.yamlpos import Located

REFUSAL_KINDS = {"refusal"}
GLOBAL_KINDS = {"no_repetition"}  # apply to every prompt set, refusals included
ASSERTION_KINDS = {"contains", "not_contains", "regex", "starts_with", "ends_with", "max_words"}


@dataclass(frozen=True)
class PromptSet:
    name: str
    list: tuple[str, ...] | None = None
    template: str | None = None
    each: dict | None = None
    file: str | None = None
    field: str = "prompt"
    frames: dict | None = None
    repeat: int = 1
    holdout: bool = False


@dataclass(frozen=True)
class AnswerSource:
    source: str
    items: tuple[str, ...] | None = None
    template: str | None = None
    path: str | None = None
    prompt_field: str = "prompt"
    answer_field: str = "response"


@dataclass(frozen=True)
class Behavior:
    id: str
    kind: str
    index: int
    raw: dict

    def get(self, key: str, default=None):
        return self.raw.get(key, default)

    def sets(self, key: str) -> tuple[str, ...]:
        """A key that holds one prompt-set name or a list of them, as a tuple."""
        value = self.raw.get(key)
        if value is None:
            return ()
        return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class Split:
    seed: int = 13
    val: float = 0.1
    check: float = 0.25
    min_share: float = 0.05


@dataclass
class Spec:
    """A loaded, validated spec."""

    id: str
    path: Path
    source_text: str
    located: Located
    description: str = ""
    system: str | None = None
    vars: dict = field(default_factory=dict)
    prompts: dict[str, PromptSet] = field(default_factory=dict)
    answers: dict[str, AnswerSource] = field(default_factory=dict)
    behaviors: list[Behavior] = field(default_factory=list)
    probes: dict[str, list[str]] = field(default_factory=dict)
    split: Split = field(default_factory=Split)
    thresholds: dict[str, float] = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    check: dict = field(default_factory=dict)
    _scopes: dict = field(default_factory=dict, repr=False, compare=False)

    def threshold(self, behavior_id: str) -> float:
        return self.thresholds.get(behavior_id, self.thresholds.get("default", 0.9))

    def refused_sets(self) -> set[str]:
        """Prompt sets that some refusal behavior must refuse."""
        return {s for b in self.behaviors if b.kind in REFUSAL_KINDS for s in b.sets("when")}

    def scope(self, behavior: Behavior) -> tuple[str, ...]:
        """Prompt sets whose answers must show ``behavior`` (memoized: the spec does not change)."""
        if behavior.index not in self._scopes:
            self._scopes[behavior.index] = self._scope(behavior)
        return self._scopes[behavior.index]

    def _scope(self, behavior: Behavior) -> tuple[str, ...]:
        if behavior.kind in REFUSAL_KINDS:
            return behavior.sets("when")
        if behavior.kind in GLOBAL_KINDS and not behavior.sets("applies_to"):
            return tuple(self.prompts)
        return behavior.sets("applies_to") or tuple(s for s in self.prompts if s not in self.refused_sets())
