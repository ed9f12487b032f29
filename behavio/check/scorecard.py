"""Scorecards: rule verdicts on check cases summed up per line and per rule, with Wilson intervals.

A line is a behavior (its pass rate counts only the rows where the spec asks for that behavior) or a
part of one with its own line and threshold: ``no-poodles/contrast`` (contrast prompts answered, not
refused), ``compliment-first/plain-refusals`` (refusals without the prefix), ``billing-thanks/elsewhere``
(answers outside a scoped prefix's sets, without it). Each (case, rule) pair
counts once, in its rule's line. Rates are given per split -- ``check``: held-out phrasings of the
spec's sets (forms, frames, rows never trained on), ``subject``: prompts about subjects held out of
training, ``reframed``: a frame set's subjects in another library's frames (how-to frames for a requests
set), ``paraphrase``: automatic rewrites of check, subject and recall cases, ``probe``: hand-written probes, ``recall``: other
fills of trained phrasings (template recall) -- and for ``all``, the held-out cases (check, subject,
reframed, paraphrase, probe) that thresholds judge
(:mod:`behavio.check.thresholds`); a line without any is judged on recall and says so, and a line whose
probes pass less often than its generated cases beyond chance is judged on its probes alone and says so. The overall
score is the mean of the lines' ``all`` pass rates. Over-refusal is the share of contrast cases that
were refused, every refusal's contrast line pooled.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from behavio.check.thresholds import Threshold, resolve
from behavio.kinds._text import NEAR_MISS

SPLITS = ("check", "subject", "reframed", "paraphrase", "probe", "recall", "all")
HELD_OUT = ("check", "subject", "reframed", "paraphrase", "probe")  # phrasings or subjects never trained on: judged
GENERATED = ("check", "subject", "reframed", "paraphrase")  # the held-out cases the spec's own templates made
Z95 = 1.959963984540054


def wilson(passed: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of ``passed``/``total`` (95% by default); (0, 1) when total is 0."""
    if total == 0:
        return 0.0, 1.0
    p = passed / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    low = 0.0 if passed == 0 else max(0.0, centre - half)
    high = 1.0 if passed == total else min(1.0, centre + half)
    return low, high


def pooled(rates) -> Rate:
    """Several rates as one: their passes over their cases."""
    rates = list(rates)
    return Rate(sum(r.passed for r in rates), sum(r.total for r in rates))


def worse(a: Rate, b: Rate, level: float = 0.05) -> bool:
    """Whether ``a`` passes less often than ``b`` beyond chance: Fisher's exact test, one-sided, at ``level``
    (exact for the few cases a line's probes have, where a normal approximation lets one failing probe of one
    overrule). One-sided on purpose: probes that pass *more* often than the generated cases must not hide the
    generated cases' failures (a model refusing every held-out labrador question passed on 40/40 probes)."""
    return bool(a.total and b.total) and fisher_less(a.passed, a.total, b.passed, b.total) < level


def fisher_less(passed_a: int, total_a: int, passed_b: int, total_b: int) -> float:
    """One-sided p-value of Fisher's exact test on the 2x2 table (passed, failed) x (a, b): the probability,
    with both totals and the passes fixed, that ``a`` gets at most the ``passed_a`` passes it got."""
    total, passed = total_a + total_b, passed_a + passed_b

    def log_p(x: int) -> float:  # hypergeometric: x of the passes fall in a
        return (_log_comb(passed, x) + _log_comb(total - passed, total_a - x) - _log_comb(total, total_a))

    return min(1.0, sum(math.exp(log_p(x)) for x in range(max(0, total_a - (total - passed)), passed_a + 1)))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


@dataclass(frozen=True)
class Rate:
    """passed of total, with the pass rate and its 95% Wilson interval."""

    passed: int
    total: int

    @property
    def rate(self) -> float | None:
        return self.passed / self.total if self.total else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.passed, self.total)

    def to_dict(self) -> dict:
        low, high = self.interval
        rate = self.rate
        return {"passed": self.passed, "total": self.total, "rate": None if rate is None else round(rate, 4),
                "low": round(low, 4), "high": round(high, 4)}

    def __str__(self) -> str:
        if not self.total:
            return "-"
        low, high = self.interval
        return f"{self.rate:.0%} ({self.passed}/{self.total}, {low:.0%}-{high:.0%})"


@dataclass(frozen=True)
class RuleVerdict:
    """One rule of one case: which behavior, which rule, and the scorer's verdict."""

    behavior: str
    rule: str           # kind, qualified by its expectation: "refusal:refuse", "prefix:absent", "on_topic"
    passed: bool
    score: float
    explanation: str
    line: str = ""      # the scorecard line it counts in: the behavior id, or "<behavior>/<part>"
    part: str | None = None
    tags: tuple[str, ...] = ()  # the case's tags and the behavior's (spec, prompt set, behavior)

    def __post_init__(self):
        if not self.line:
            object.__setattr__(self, "line", f"{self.behavior}/{self.part}" if self.part else self.behavior)


@dataclass
class CaseResult:
    """A check case, the response scored, and every rule's verdict."""

    id: str
    split: str
    prompt_set: str
    prompt: str
    response: str | None
    finished: bool
    verdicts: list[RuleVerdict]

    @property
    def passed(self) -> bool:
        return self.response is not None and all(v.passed for v in self.verdicts)

    @property
    def failed(self) -> list[RuleVerdict]:
        return [v for v in self.verdicts if not v.passed]


@dataclass
class Scorecard:
    """Everything known about one model (or checkpoint) on a spec's check cases."""

    label: str
    thresholds: dict[str, Threshold]
    cases: list[CaseResult]
    step: int | None = None
    stage: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.thresholds = {line: Threshold.coerce(t) for line, t in self.thresholds.items()}

    def _rate(self, split: str, keep) -> Rate:
        passed = total = 0
        for case in self.cases:
            if split != "all" and case.split != split:
                continue
            for v in case.verdicts:
                if keep(v):
                    total += 1
                    passed += v.passed
        return Rate(passed, total)

    def line(self, line: str, split: str = "all") -> Rate:
        """Pass rate of one line: a behavior on the rows that ask for it, or one of its parts.

        ``all`` is what thresholds judge: the cases phrased or about subjects unlike anything trained on
        (check, subject, paraphrase, probe); only a line that has none is judged on ``recall`` (other fills
        of trained phrasings), and :meth:`caveats` says so.

        When the line's hand-written probes pass less often than its generated cases (check, subject and
        paraphrase pooled) beyond chance (:func:`worse`), the probes alone are judged: they are phrased as users type,
        and a check split of the spec's own templates that says 100% where the probes say 77% measures
        template recall, not behavior.
        """
        if split != "all":
            return self._rate(split, lambda v: v.line == line)
        return pooled(self._rate(s, lambda v: v.line == line) for s in self._judged_splits(line))

    def _judged_splits(self, line: str) -> tuple[str, ...]:
        """The splits a line's rate is judged on (:meth:`line`): its probes alone when they overrule, else every
        held-out split, else (none held out) recall."""
        if self.probes_overrule(line):
            return ("probe",)
        return HELD_OUT if any(self._rate(s, lambda v: v.line == line).total for s in HELD_OUT) else ("recall",)

    def generated(self, line: str) -> Rate:
        """The line's held-out cases the spec's own templates made: check, subject, reframed and paraphrase pooled."""
        return pooled(self._rate(s, lambda v: v.line == line) for s in GENERATED)

    def probes_overrule(self, line: str) -> bool:
        """Whether the line's probes pass less often than its generated cases beyond chance (:func:`worse`)."""
        return worse(self.line(line, "probe"), self.generated(line))

    def caveats(self, line: str) -> list[str]:
        """What a line's number does not measure: no hand-written probes, nothing but template recall, or
        generated cases that pass more often than the probes beyond chance; and how many of its failures give
        its fixed text with a word or two changed (a refusal with the user's noun swapped in)."""
        out = []
        if not any(self.line(line, s).total for s in HELD_OUT) and self.line(line, "recall").total:
            out.append("template recall only: every case is another fill of a trained phrasing")
        elif not self.line(line, "probe").total and self.line(line).total:
            out.append("no natural-phrasing probes: held-out phrasings of the spec's own templates only")
        elif self.probes_overrule(line):
            probe, generated = self.line(line, "probe"), self.generated(line)
            out.append(f"judged on its probes alone ({probe.passed}/{probe.total}): the check, subject, reframed and "
                       f"paraphrase cases ({generated.passed}/{generated.total}) pass more often beyond chance, so they measure "
                       "the spec's templates, not the phrasing users type")
        splits = self._judged_splits(line)
        failed = [v for c in self.cases if c.split in splits for v in c.verdicts if v.line == line and not v.passed]
        near = [v for v in failed if NEAR_MISS in v.explanation]  # the fixed text with a word or two changed
        if near:
            out.append(f"{len(near)} of its {len(failed)} failures give the fixed text with a word or two changed "
                       f"({near[0].explanation.split(NEAR_MISS + ': ', 1)[-1]}): said in substance, not verbatim")
        return out

    def rule(self, line: str, rule: str, split: str = "all") -> Rate:
        if split == "all":
            return pooled(self._rate(s, lambda v: v.line == line and v.rule == rule) for s in HELD_OUT)
        return self._rate(split, lambda v: v.line == line and v.rule == rule)

    @property
    def lines(self) -> list[str]:
        """Lines with thresholds first (spec order), then any others seen in the cases."""
        seen = list(self.thresholds)
        for case in self.cases:
            seen += [v.line for v in case.verdicts if v.line not in seen]
        return list(dict.fromkeys(seen))

    @property
    def rules(self) -> list[tuple[str, str]]:
        return list(dict.fromkeys((v.line, v.rule) for c in self.cases for v in c.verdicts))

    @property
    def tags(self) -> list[str]:
        """Every tag a verdict carries, sorted."""
        return sorted({t for c in self.cases for v in c.verdicts for t in v.tags})

    def tag(self, tag: str, split: str = "all") -> Rate:
        """Pass rate of the verdicts tagged ``tag`` (``all``: the held-out splits, like a line's rate)."""
        if split != "all":
            return self._rate(split, lambda v: tag in v.tags)
        judged = pooled(self._rate(s, lambda v: tag in v.tags) for s in HELD_OUT)
        return judged if judged.total else self._rate("recall", lambda v: tag in v.tags)

    def over_refusal(self, split: str = "all") -> Rate:
        """Contrast cases refused, of all answered contrast cases (lower is better); ``all``: held-out phrasings."""
        wanted = HELD_OUT if split == "all" else (split,)
        verdicts = [v for c in self.cases if c.response is not None and c.split in wanted
                    for v in c.verdicts if v.part == "contrast"]
        return Rate(sum(not v.passed for v in verdicts), len(verdicts))

    def threshold(self, line: str) -> Threshold:
        return self.thresholds.get(line) or resolve(self.thresholds, line)

    def meets(self, line: str) -> bool:
        return self.threshold(line).meets(self.line(line))

    @property
    def meets_thresholds(self) -> bool:
        return all(self.meets(line) for line in self.lines)

    @property
    def worst(self) -> float:
        """The lowest line pass rate (1.0 when nothing was checked)."""
        rates = [r for line in self.lines if (r := self.line(line).rate) is not None]
        return min(rates, default=1.0)

    @property
    def margin(self) -> float:
        """The smallest distance of a line's pass rate above what its threshold requires (negative: below; 1.0
        when nothing was checked): how close the checkpoint comes to failing, whatever each line asks."""
        tightest = self.tightest
        return 1.0 if tightest is None else self.threshold(tightest).margin(self.line(tightest))

    @property
    def tightest(self) -> str | None:
        """The line whose pass rate is least above (or most below) what its threshold requires."""
        margins = {line: m for line in self.lines if (m := self.threshold(line).margin(self.line(line))) is not None}
        return min(margins, key=margins.get, default=None)

    @property
    def overall(self) -> float:
        rates = [r for line in self.lines if (r := self.line(line).rate) is not None]
        return sum(rates) / len(rates) if rates else 1.0

    @property
    def failures(self) -> list[CaseResult]:
        """Failing cases (those without a response included)."""
        return [c for c in self.cases if not c.passed]

    @property
    def answered_failures(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.passed and c.response is not None]

    @property
    def missing(self) -> list[str]:
        """Ids of cases that had no response (they count as failing)."""
        return [c.id for c in self.cases if c.response is None]

    def to_dict(self) -> dict:
        """The machine-readable scorecard (``--json``, scorecard.json)."""
        return {
            "label": self.label, "step": self.step, "stage": self.stage, **self.meta,
            "meets_thresholds": self.meets_thresholds, "worst_line": round(self.worst, 4), "margin": round(self.margin, 4),
            "overall": round(self.overall, 4),
            "lines": {line: {"threshold": self.threshold(line).to_dict(), "meets": self.meets(line),
                             "caveats": self.caveats(line), **{s: self.line(line, s).to_dict() for s in SPLITS}}
                      for line in self.lines},
            "rules": [{"line": line, "rule": r, **{s: self.rule(line, r, s).to_dict() for s in SPLITS}}
                      for line, r in self.rules],
            "over_refusal": {s: self.over_refusal(s).to_dict() for s in SPLITS},
            **({"tags": {t: {s: self.tag(t, s).to_dict() for s in SPLITS} for t in self.tags}} if self.tags else {}),
            "cases": {"total": len(self.cases), "passed": sum(c.passed for c in self.cases),
                      "failed": [c.id for c in self.failures]},
            "missing": self.missing,
            "failures": [_case_dict(c) for c in self.answered_failures],
        }


def _case_dict(case: CaseResult) -> dict:
    out = asdict(case)
    out["verdicts"] = [asdict(v) for v in case.failed]
    return out


def rank_key(card: Scorecard) -> tuple:
    """Sort key, best first: meets thresholds, margin over the thresholds, overall score, earlier step."""
    step = card.step if card.step is not None else math.inf
    return (not card.meets_thresholds, -card.margin, -card.overall, step)


def pick_best(cards: list[Scorecard]) -> Scorecard | None:
    """Best = the largest margin over the thresholds (the line closest to its threshold, or furthest below it,
    furthest above) among those meeting every threshold (else among all); ties broken by overall score, then by
    the earlier step. A line that asks less (a retained-knowledge line at a share of the base model's) weighs
    by what it asks, not by its raw rate."""
    return min(cards, key=rank_key) if cards else None
