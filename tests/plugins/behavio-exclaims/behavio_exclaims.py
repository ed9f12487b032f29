"""Kind ``exclaims``: the answer contains at least ``min_count`` exclamation marks.

An example of a behavior kind from another package (docs/kinds.md): it declares its key, checks
every answered row in scope, scores the rule, and derives one DPO violation, ``calmed`` (the answer
with its exclamation marks turned into full stops).
"""

from __future__ import annotations

from behavio.kinds import Kind, RuleResult
from behavio.kinds.base import rule


class Exclaims(Kind):
    name = "exclaims"
    summary = "The answer contains exclamation marks."
    keys = {"min_count": {"type": "integer", "minimum": 1, "default": 1,
                          "description": "exclaims: fewest exclamation marks the answer must have."}}

    def rules(self, behavior, example, spec):
        if example.row.set not in spec.scope(behavior) or example.refused_by is not None:
            return []
        return [rule(behavior, self.name, min_count=self.arg(behavior, "min_count"))]

    def violations(self, behavior, example, ctx):
        if example.refused_by is None and example.body is not None and example.row.set in ctx.spec.scope(behavior):
            yield "calmed", example.answer.replace("!", ".")

    def score(self, response, args, case, finished):
        count, wanted = response.count("!"), int(args.get("min_count", 1))
        if count >= wanted:
            return RuleResult(True, 1.0, f"{count} exclamation marks")
        return RuleResult(False, count / wanted, f"expected at least {wanted} exclamation marks; got {count}")


KIND = Exclaims()
