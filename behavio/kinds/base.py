"""What a behavior kind is: the one class that knows everything about one kind of behavior.

A kind declares its spec keys (JSON Schema fragments with their docs and defaults), which prompt
sets a behavior of that kind applies to, what it does to a training answer (replace it, shape its
body, open it), the check rules it puts on a row, the DPO violations it derives, the scorer of its
rule, and whether an on-policy answer can be judged by that rule. The compiler, the check engine,
the DPO deriver and on-policy judging only ever call these methods (see ``behavio.kinds``).

Hooks receive typed spec objects (``Behavior``, ``Spec``) and the compiler's ``Example``; they never
import the compiler, so a plugin kind needs nothing but this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Iterable

if TYPE_CHECKING:
    from behavio.check.cases import CheckCase, Rule
    from behavio.spec.model import Behavior, Spec

KeyPath = tuple
Problem = tuple[KeyPath, str]          # (key path below the behavior, message)
Render = Callable[[str, KeyPath], str]  # render a Jinja string found at a key path below the behavior


class RowProblem(Exception):
    """A problem with one row's arguments (a template that fails, a pattern that does not compile).

    Raised by ``row_args`` (and by the ``render`` it is given); the compiler reports it at
    ``behaviors[i].<path>`` and skips the row.
    """

    def __init__(self, path: KeyPath, message: str):
        super().__init__(message)
        self.path, self.message = tuple(path), message


@dataclass(frozen=True)
class RuleResult:
    """Verdict of one rule on one response."""

    passed: bool
    score: float
    explanation: str


@dataclass(frozen=True)
class DpoContext:
    """What violation hooks may use besides the example: the spec, the row's index, answer donors, and
    which violations the behavior asks for (``dpo: [names]``; None: every one its kind derives)."""

    spec: Spec
    index: int
    donors: Callable[[str], list[str]]  # prompt set -> answer bodies of every other set (off-topic rejections)
    allowed: frozenset[str] | None = None
    variant: Callable[[str, dict], str] | None = None  # (pending body marker, {"behavior", "kind", "args",
    #   "violation"}) -> the marker of that body with the violation applied after the fill (Kind.violate_body)

    def allows(self, violation: str) -> bool:
        return self.allowed is None or violation in self.allowed


class Kind:
    """Base class of every behavior kind; subclasses override what applies to them.

    Class attributes:
    - ``name``: the value of ``kind:`` in a spec, and the name of the rule it checks.
    - ``summary``: one line for the docs.
    - ``keys``: the kind's own spec keys, ``name -> JSON Schema fragment`` (with ``description`` and,
      where one exists, ``default``); ``required`` lists the ones a behavior must give.
    - ``scoped``: takes ``applies_to`` (which prompt sets it applies to).
    - ``teaches``: training rows must show it (``split.min_share`` counts its rows).
    - ``judged_early``: a short, possibly truncated answer can be judged by its rule (on-policy DPO).
    - ``lessons``: DPO violation -> the rule (``kind:expect``) its chosen side passes and its rejected side
      breaks, for kinds ``judged_early`` (on-policy DPO balances a behavior's opposite lessons).
    - ``violation_names``: every DPO violation it can derive (``dpo: [names]`` picks some of them).
    - ``parts``: part -> what its scorecard line counts, for rules a behavior puts on rows where the spec
      does not ask for the behavior itself (a refusal's contrast prompts): each part is judged on its own
      line, ``<behavior id>/<part>``, with its own threshold, so no pooled rate can hide a failing part.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    keys: ClassVar[dict[str, dict]] = {}
    required: ClassVar[tuple[str, ...]] = ()
    scoped: ClassVar[bool] = True
    teaches: ClassVar[bool] = False
    judged_early: ClassVar[bool] = False
    lessons: ClassVar[dict[str, str]] = {}
    parts: ClassVar[dict[str, str]] = {}
    violation_names: ClassVar[tuple[str, ...]] = ()
    undo_violations: ClassVar[tuple[str, ...]] = ()  # violations made from the body before this kind shaped it
    warning_names: ClassVar[dict[str, str]] = {}  # name -> what it means, for every warning ``warnings`` gives
    defaults: ClassVar[dict] = {}  # defaults of shared keys that differ between kinds (not in the schema)

    # ------------------------------------------------------------------ spec

    def reference_notes(self) -> str:
        """More for its section of docs/rules.md than its module docstring says (lists read from the code)."""
        return ""

    def no_pairs_hint(self, behavior) -> str:
        """What its rows lack when it derives no DPO pair at all (the ``no-dpo-pairs`` warning)."""
        return "no training row in its scope gave a rejected answer (prompt sets it does not apply to?)"

    def default(self, key: str):
        """The documented default of one of this kind's keys."""
        return self.defaults.get(key, self.keys[key].get("default"))

    def arg(self, behavior: Behavior, key: str):
        """``behavior``'s value for ``key``, or the key's default."""
        value = behavior.get(key)
        return self.default(key) if value is None else value

    def set_keys(self) -> tuple[str, ...]:
        """Keys whose values name prompt sets (checked against ``prompts``)."""
        return ("applies_to",) if self.scoped else ()

    def refused_sets(self, behavior: Behavior) -> tuple[str, ...]:
        """Prompt sets whose whole answer this behavior gives (a refusal's ``when``)."""
        return ()

    def scope(self, behavior: Behavior, spec: Spec) -> tuple[str, ...]:
        """Prompt sets whose answers must show the behavior: ``applies_to``, else every set that is answered."""
        return behavior.sets("applies_to") or spec.answered_sets()

    def paired_prompts(self, behavior: Behavior, spec: Spec) -> list[tuple[str, str]]:
        """(frame library, prompt set) pairs: the compiler renders the library's frames with the set's subjects
        and adds them to the set (minimal pairs: a phrasing the behavior keys on, with a subject it must not)."""
        return []

    def extra_phrasings(self, behavior: Behavior, spec: Spec) -> list[tuple[str, str]]:
        """(frame library, prompt set) pairs: the compiler asks each of the set's subjects once more in one of the
        library's frames and adds the rows to the set (another way of asking, on both sides of a decision)."""
        return []

    def problems(self, behavior: Behavior, spec: Spec) -> Iterable[Problem]:
        """Cross-checks the JSON Schema cannot express (key paths below the behavior)."""
        return ()

    def warnings(self, behavior: Behavior, spec: Spec, prompts: dict[str, list[str]]) -> Iterable[tuple[str, KeyPath, str]]:
        """Advice about a spec that compiles but may not train well: ``(name, absolute key path, message)``, the
        name one of ``warning_names`` (a spec silences it by name under ``ignore_warnings``); ``prompts`` holds
        every prompt set's expanded prompts."""
        return ()

    # ------------------------------------------------------------------ composing an answer

    def row_args(self, behavior: Behavior, row, spec: Spec, render: Render) -> dict | None:
        """Arguments rendered for one prompt row (Jinja keys see ``row``); None when the row is none of its
        business. Raises RowProblem for a row whose arguments cannot work."""
        return None

    def whole_answers(self, behavior: Behavior, args: dict) -> list[str]:
        """The answers, one of which is the whole answer of a row in ``refused_sets`` (kinds that refuse)."""
        raise NotImplementedError

    def response_template(self, behavior: Behavior) -> str | None:
        """A Jinja template that writes the whole answer body of rows in scope (``answer`` = the source's body)."""
        return None

    def openings(self, behavior: Behavior, args: dict) -> tuple[list[str], str] | None:
        """(sentences, separator): one sentence of the list opens the answer of rows in scope; None if it opens nothing."""
        return None

    def closings(self, behavior: Behavior, args: dict) -> tuple[list[str], str] | None:
        """(sentences, separator): one sentence of the list closes the answer of rows in scope; None if it closes nothing."""
        return None

    @property
    def shapes_body(self) -> bool:
        """Whether the kind puts answer bodies in a form of its own (overrides :meth:`shape_body`)."""
        return type(self).shape_body is not Kind.shape_body

    def shape_body(self, behavior: Behavior, body: str) -> str:
        """The answer body of a row in scope in the form the kind asks for (a list of steps); unchanged by default.
        Applied to the body the answer source wrote, before any opening or closing sentence."""
        return body

    def violate_body(self, behavior: Behavior, body: str, violation: str) -> str | None:
        """A shaped body turned into the form ``violation`` names (for kinds that shape bodies); for a violation in
        ``undo_violations``, ``body`` is the body before this kind shaped it. None when it cannot be broken so."""
        raise NotImplementedError

    def guards_refusals(self, behavior: Behavior, spec: Spec) -> bool:
        """Whether its opening must be kept off refused rows (checked there, and taught by DPO pairs)."""
        return False

    # ------------------------------------------------------------------ checking

    def rules(self, behavior: Behavior, example, spec: Spec) -> list[Rule]:
        """Check rules an answer to ``example``'s prompt must pass."""
        return []

    def score(self, response: str, args: dict, case: CheckCase, finished: bool) -> RuleResult:
        """Score ``response`` against one of this kind's rules."""
        raise NotImplementedError

    def embedding_texts(self, args: dict, case: CheckCase, response: str) -> set[str]:
        """Texts the scorer will embed (checked in a few batches before scoring)."""
        return set()

    # ------------------------------------------------------------------ DPO

    def violations(self, behavior: Behavior, example, ctx: DpoContext) -> Iterable[tuple[str, str | None]]:
        """(violation name, rejected answer) pairs derived for ``example``, only those ``ctx.allows``; the
        rejected side must break the behavior's rule on that row (compile drops a pair whose side does not)."""
        return ()

    def violation_problems(self, behavior: Behavior, spec: Spec, asked: list[str]) -> Iterable[Problem]:
        """Why violations the spec asks for by name (``dpo: [...]``) cannot be derived for this behavior."""
        return ()


def rule(behavior: Behavior, kind: str, *, part: str | None = None, **args) -> Rule:
    """One check rule of ``behavior`` (of one of its ``parts``, which count in a scorecard line of their own)."""
    from behavio.check.cases import Rule

    return Rule(behavior.id, kind, args, part, tuple(behavior.get("tags") or ()))
