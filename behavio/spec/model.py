"""Typed spec objects, built from YAML data that already passed the JSON Schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from behavio import kinds
from behavio.check.thresholds import Threshold, resolve as resolve_threshold
from behavio.spec.yamlpos import Located


Turn = tuple  # (role, text): role "user" or "assistant"; an assistant text of None is written by a model


@dataclass(frozen=True)
class PromptSet:
    name: str
    list: tuple[str, ...] | str | None = None  # literal prompts, or a Jinja expression evaluating to them
    template: str | None = None
    each: dict | None = None
    file: str | None = None
    field: str = "prompt"
    frames: dict | None = None
    conversations: tuple[tuple[Turn, ...], ...] | None = None
    conversation: tuple[Turn, ...] | None = None
    judge: str = "last"
    repeat: int = 1
    holdout: bool = False
    augment: int | None = None
    tags: tuple[str, ...] = ()

    @property
    def frame_library(self) -> str | None:
        """The frame library the set draws on (``questions`` unless it names one); None without frames."""
        return self.frames.get("library", "questions") if self.frames else None


@dataclass(frozen=True)
class AnswerSource:
    source: str
    items: tuple[str, ...] | None = None
    template: str | None = None
    path: str | None = None
    prompt_field: str = "prompt"
    answer_field: str = "response"
    on_failure: str = "drop"


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
    subjects: float = 0.1
    min_share: float = 0.05
    paraphrase: float = 0.5
    reframed: float = 0.0


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
    thresholds: dict[str, float | dict] = field(default_factory=dict)
    augment: int = 1
    ignore_warnings: frozenset[str] = frozenset()
    tags: tuple[str, ...] = ()
    train: dict = field(default_factory=dict)
    check: dict = field(default_factory=dict)
    _scopes: dict = field(default_factory=dict, repr=False, compare=False)

    def augment_of(self, name: str) -> int:
        """Rewritten copies of each training prompt of set ``name``."""
        own = self.prompts[name].augment
        return self.augment if own is None else own

    def threshold(self, line: str) -> Threshold:
        """What a scorecard line (a behavior id or ``<id>/<part>``) must reach (:mod:`behavio.check.thresholds`)."""
        return resolve_threshold(self.thresholds, line)

    def refused_sets(self) -> set[str]:
        """Prompt sets whose whole answer a behavior gives (a refusal's ``when``)."""
        if "refused" not in self._scopes:
            self._scopes["refused"] = {s for b in self.behaviors for s in kinds.of(b).refused_sets(b)}
        return self._scopes["refused"]

    def answered_sets(self) -> tuple[str, ...]:
        """Prompt sets that are answered (refused by no behavior), in spec order."""
        return tuple(s for s in self.prompts if s not in self.refused_sets())

    def scope(self, behavior: Behavior) -> tuple[str, ...]:
        """Prompt sets whose answers must show ``behavior`` (its kind decides; memoized: the spec does not change)."""
        if behavior.index not in self._scopes:
            self._scopes[behavior.index] = kinds.of(behavior).scope(behavior, self)
        return self._scopes[behavior.index]
