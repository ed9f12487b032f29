"""What a scorecard line must reach: a pass rate, optionally its 95% Wilson lower bound, or a failure budget.

In a spec (``thresholds:``) a line's threshold is a number (the pass rate it must reach) or a mapping:

    thresholds:
      no-poodles: {rate: 0.9, bound: wilson}   # the lower end of the 95% interval must reach 0.9
      no-secrets: {max_failures: 0}            # never: one failing case fails the line
      knows-facts: {of_base: 0.92}             # 92% of the base model's own pass rate on the same cases
      default: 0.9

``of_base`` is for lines that measure what the base model already did (facts it knew, replayed answers): the
check answers those cases with the base model too and the line must reach that share of the base's rate
(``base``, filled in by the check; unmeasured, as for a served model or a responses file, the base counts as
passing every case).

A line is a behavior id (the rows where the spec asks for the behavior) or ``<id>/<part>`` for the
parts a kind adds (``no-poodles/contrast``: contrast prompts answered; ``compliment-first/plain-refusals``:
refusals without the prefix; ``billing-thanks/elsewhere``: answers outside a scoped prefix's sets without it). A part without its own threshold takes its behavior's, then ``default``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

DEFAULT_RATE = 0.9
BOUNDS = ("rate", "wilson")


@dataclass(frozen=True)
class Threshold:
    """``rate``: least pass rate (of the observed rate, or of its Wilson lower bound with ``bound="wilson"``);
    ``max_failures``: most failing rows (None: no limit); ``of_base``: the least pass rate as a share of the base
    model's on the same cases (``base``, once measured), instead of ``rate``."""

    rate: float = 0.0
    bound: str = "rate"
    max_failures: int | None = None
    of_base: float | None = None
    base: float | None = None

    @classmethod
    def coerce(cls, value) -> Threshold:
        """A Threshold from a number, a spec mapping, or a Threshold."""
        if isinstance(value, Threshold):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(rate=float(value))
        if isinstance(value, dict):
            of_base, base = value.get("of_base"), value.get("base")
            rate = 0.0 if of_base is not None else value.get("rate", 0.0)  # with of_base a written rate is derived
            return cls(rate=float(rate), bound=value.get("bound", "rate"),
                       max_failures=value.get("max_failures"), of_base=None if of_base is None else float(of_base),
                       base=None if base is None else float(base))
        raise TypeError(f"threshold: expected a number or a mapping, got {value!r}")

    @property
    def required(self) -> float:
        """The pass rate the line must reach: ``rate``, or ``of_base`` times the base model's (1 if unmeasured)."""
        if self.of_base is None:
            return self.rate
        return self.of_base * (1.0 if self.base is None else self.base)

    def with_base(self, base: float | None) -> Threshold:
        """This threshold with the base model's measured pass rate filled in (unchanged without ``of_base``)."""
        return self if self.of_base is None else dataclasses.replace(self, base=base)

    def margin(self, rate) -> float | None:
        """How far a :class:`behavio.check.scorecard.Rate` is above what this threshold requires (negative:
        below); None for a line with no rows."""
        if not rate.total:
            return None
        observed = rate.interval[0] if self.bound == "wilson" else rate.rate
        return observed - self.required

    def meets(self, rate) -> bool:
        """Whether a :class:`behavio.check.scorecard.Rate` reaches this threshold (a line with no rows does)."""
        if not rate.total:
            return True
        if self.max_failures is not None and rate.total - rate.passed > self.max_failures:
            return False
        return self.margin(rate) + 1e-12 >= 0

    def describe(self) -> str:
        """``95%``, ``95% (Wilson lower bound)``, ``0 failures``, ``92% of the base model's 84% (77%)``, or both."""
        parts = []
        wilson = " (Wilson lower bound)" if self.bound == "wilson" else ""
        if self.of_base is not None:
            base = (f"{self.base:.0%} ({self.required:.0%})" if self.base is not None
                    else "(not measured: counted as 100%)")
            parts.append(f"{self.of_base:.0%} of the base model's {base}{wilson}")
        elif self.rate or self.max_failures is None:
            parts.append(f"{self.rate:.0%}{wilson}")
        if self.max_failures is not None:
            parts.append(f"at most {self.max_failures} failure{'s' if self.max_failures != 1 else ''}")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        out: dict = {"rate": self.rate if self.of_base is None else round(self.required, 4)}
        if self.bound != "rate":
            out["bound"] = self.bound
        if self.max_failures is not None:
            out["max_failures"] = self.max_failures
        if self.of_base is not None:
            out["of_base"] = self.of_base
            if self.base is not None:
                out["base"] = round(self.base, 4)
        return out


def resolve(thresholds: dict, line: str) -> Threshold:
    """The threshold of ``line``: its own entry, else its behavior's (for ``id/part``), else ``default``, else 0.9."""
    behavior = line.split("/", 1)[0]
    for key in (line, behavior, "default"):
        if key in thresholds:
            return Threshold.coerce(thresholds[key])
    return Threshold(DEFAULT_RATE)
