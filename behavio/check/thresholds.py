"""What a scorecard line must reach: a pass rate, optionally its 95% Wilson lower bound, or a failure budget.

In a spec (``thresholds:``) a line's threshold is a number (the pass rate it must reach) or a mapping:

    thresholds:
      no-poodles: {rate: 0.9, bound: wilson}   # the lower end of the 95% interval must reach 0.9
      no-secrets: {max_failures: 0}            # never: one failing case fails the line
      default: 0.9

A line is a behavior id (the rows where the spec asks for the behavior) or ``<id>/<part>`` for the
parts a kind adds (``no-poodles/contrast``: contrast prompts answered; ``compliment-first/plain-refusals``:
refusals without the prefix; ``billing-thanks/elsewhere``: answers outside a scoped prefix's sets without it). A part without its own threshold takes its behavior's, then ``default``.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_RATE = 0.9
BOUNDS = ("rate", "wilson")


@dataclass(frozen=True)
class Threshold:
    """``rate``: least pass rate (of the observed rate, or of its Wilson lower bound with ``bound="wilson"``);
    ``max_failures``: most failing rows (None: no limit)."""

    rate: float = 0.0
    bound: str = "rate"
    max_failures: int | None = None

    @classmethod
    def coerce(cls, value) -> Threshold:
        """A Threshold from a number, a spec mapping, or a Threshold."""
        if isinstance(value, Threshold):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(rate=float(value))
        if isinstance(value, dict):
            return cls(rate=float(value.get("rate", 0.0)), bound=value.get("bound", "rate"),
                       max_failures=value.get("max_failures"))
        raise TypeError(f"threshold: expected a number or a mapping, got {value!r}")

    def meets(self, rate) -> bool:
        """Whether a :class:`behavio.check.scorecard.Rate` reaches this threshold (a line with no rows does)."""
        if not rate.total:
            return True
        if self.max_failures is not None and rate.total - rate.passed > self.max_failures:
            return False
        observed = rate.interval[0] if self.bound == "wilson" else rate.rate
        return observed + 1e-12 >= self.rate

    def describe(self) -> str:
        """``95%``, ``95% (Wilson lower bound)``, ``0 failures``, or both."""
        parts = []
        if self.rate or self.max_failures is None:
            parts.append(f"{self.rate:.0%}" + (" (Wilson lower bound)" if self.bound == "wilson" else ""))
        if self.max_failures is not None:
            parts.append(f"at most {self.max_failures} failure{'s' if self.max_failures != 1 else ''}")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        out: dict = {"rate": self.rate}
        if self.bound != "rate":
            out["bound"] = self.bound
        if self.max_failures is not None:
            out["max_failures"] = self.max_failures
        return out


def resolve(thresholds: dict, line: str) -> Threshold:
    """The threshold of ``line``: its own entry, else its behavior's (for ``id/part``), else ``default``, else 0.9."""
    behavior = line.split("/", 1)[0]
    for key in (line, behavior, "default"):
        if key in thresholds:
            return Threshold.coerce(thresholds[key])
    return Threshold(DEFAULT_RATE)
