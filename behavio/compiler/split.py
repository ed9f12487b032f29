"""Seeded split of every prompt set into train / val / check, stratified by prompt set.

Each prompt set belongs to a fixed group of behaviors, so splitting each set on its own
puts every behavior into all three splits.  Prompts that are checked (check split or
probes) are removed from train/val of every set, then compile asserts there is no overlap.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from behavio.compiler.expand import PromptRow, normalize
from behavio.compiler.issues import Issues
from behavio.spec.model import Spec

MIN_SET_SIZE = 3


@dataclass
class SplitRows:
    train: list[PromptRow]
    val: list[PromptRow]
    check: list[PromptRow]
    dropped_for_leak: int = 0


def split_rows(spec: Spec, rows: dict[str, list[PromptRow]], issues: Issues) -> SplitRows:
    out = SplitRows([], [], [])
    for name, set_rows in rows.items():
        train, val, check = _split_set(spec, name, set_rows, issues)
        out.train += train
        out.val += val
        out.check += check
    held_out = {normalize(r.prompt) for r in out.check}
    held_out |= {normalize(p) for probes in spec.probes.values() for p in probes}
    before = len(out.train) + len(out.val)
    out.train = [r for r in out.train if normalize(r.prompt) not in held_out]
    out.val = [r for r in out.val if normalize(r.prompt) not in held_out]
    out.dropped_for_leak = before - len(out.train) - len(out.val)
    if out.dropped_for_leak:
        issues.warn(("prompts",), f"{out.dropped_for_leak} training/validation prompts equal a check or probe prompt and were dropped")
    leaked = {normalize(r.prompt) for r in out.train + out.val} & held_out
    if leaked:  # cannot happen after the filter above; a hard guarantee, not a user error
        raise RuntimeError(f"check prompts leaked into training data: {sorted(leaked)[:3]}")
    return out


def _split_set(spec: Spec, name: str, rows: list[PromptRow], issues: Issues):
    if spec.prompts[name].holdout:
        return [], [], list(rows)
    n = len(rows)
    wanted = sum(1 for share in (spec.split.val, spec.split.check) if share > 0) + 1
    if n < wanted:
        issues.add(("prompts", name), f"prompt set {name!r} has {n} distinct prompt(s); it needs at least {wanted} "
                   "to put one into each of train, val and check")
        return [], [], []
    order = list(range(n))
    random.Random(f"{spec.split.seed}:split:{name}").shuffle(order)
    n_check = _share(n, spec.split.check)
    n_val = _share(n, spec.split.val)
    while n_check + n_val > n - 1:
        if n_val >= n_check and n_val > (1 if spec.split.val > 0 else 0):
            n_val -= 1
        else:
            n_check -= 1
    check = sorted(order[:n_check])
    val = sorted(order[n_check:n_check + n_val])
    train = sorted(order[n_check + n_val:])
    return [rows[i] for i in train], [rows[i] for i in val], [rows[i] for i in check]


def _share(n: int, share: float) -> int:
    return 0 if share <= 0 else max(1, round(n * share))
