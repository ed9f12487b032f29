"""Compile one spec, in memory: expand → compose → split → SFT / DPO / checks → files + manifest.

Nothing is written here; `behavio.compiler.output` writes the result atomically, so a spec
with errors leaves no file behind.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from behavio import __version__, kinds, pending
from behavio.compiler import checks, dpo
from behavio.compiler.compose import Composer, Example
from behavio.compiler.expand import PromptRow, expand_all
from behavio.compiler.issues import Issues
from behavio.compiler.split import split_rows
from behavio.compiler.suite import render_suite, suite_filename
from behavio.control_tokens import find_markers
from behavio.errors import SpecIssue
from behavio.jsonio import encode_jsonl
from behavio.paths import templates_dir
from behavio.spec.load import load_spec
from behavio.spec.model import Spec


@dataclass
class Compiled:
    spec: Spec
    files: dict[str, bytes]
    manifest: dict
    warnings: list[SpecIssue] = field(default_factory=list)


def compile_spec(path: str | Path) -> Compiled:
    """Compile the spec at ``path``; raise SpecError with every problem found."""
    spec = load_spec(path)
    issues = Issues(spec)
    rows = expand_all(spec, issues)
    issues.raise_if_any()
    for behavior in spec.behaviors:
        for path, message in kinds.of(behavior).warnings(behavior, spec):
            issues.warn(path, message)
    parts = split_rows(spec, rows, issues)
    issues.raise_if_any()
    composer = Composer(spec, issues)
    train = _compose(composer, parts.train)
    val = _compose(composer, parts.val)
    check = _compose(composer, parts.check)
    probes = _compose(composer, [PromptRow(name, i, text) for name, texts in spec.probes.items() for i, text in enumerate(texts)], probe=True)
    issues.raise_if_any()
    _warn_control_markers(train + val + check + probes, issues)

    sft_train = [_sft_row(ex, spec, copy) for ex in train for copy in range(spec.prompts[ex.row.set].repeat)]
    sft_val = [_sft_row(ex, spec, 0) for ex in val]
    train_donors, val_donors = dpo.Donors(train), dpo.Donors(val)
    dpo_train = [p for ex in train for copy in range(spec.prompts[ex.row.set].repeat) for p in _dpo_rows(spec, ex, train_donors, copy)]
    dpo_val = [p for ex in val for p in _dpo_rows(spec, ex, val_donors, 0)]
    cases = [checks.check_case(spec, ex, "check").to_dict() for ex in check]
    cases += [checks.check_case(spec, ex, "probe").to_dict() for ex in probes]
    composition = _composition(spec, sft_train, sft_val, cases)
    _enforce_min_share(spec, composition, issues)
    issues.raise_if_any()

    waiting = [{"key": k, "messages": m} for k, m in sorted(composer.pending.items())]
    files = {
        "sft.jsonl": encode_jsonl(sft_train), "sft.val.jsonl": encode_jsonl(sft_val),
        "dpo.jsonl": encode_jsonl(dpo_train), "dpo.val.jsonl": encode_jsonl(dpo_val),
        "checks.jsonl": encode_jsonl(cases), "pending.jsonl": encode_jsonl(waiting),
    }
    files[suite_filename(spec.id)] = render_suite(spec).encode("utf-8")
    manifest = _manifest(spec, files, composition, waiting)
    files["manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    return Compiled(spec, files, manifest, issues.warnings)


def _compose(composer: Composer, rows: list[PromptRow], probe: bool = False) -> list[Example]:
    return [ex for row in rows if (ex := composer.compose(row, probe=probe)) is not None]


def _warn_control_markers(examples: list[Example], issues: Issues) -> None:
    """Warn (once per prompt set) when spec text or data holds chat control markers such as <|im_end|>."""
    found: dict[str, tuple[str, set[str], int]] = {}
    for ex in examples:
        texts = [m["content"] for m in ex.prompt] + [ex.answer or "", ex.body or ""]
        markers = {m for t in texts for m in find_markers(t)}
        if markers:
            first, seen, n = found.get(ex.row.set, (ex.id, set(), 0))
            found[ex.row.set] = (first, seen | markers, n + 1)
    for name, (first, markers, n) in sorted(found.items()):
        where = ("prompts", name) if name in issues.spec.prompts else ("probes",)
        issues.warn(where, f"{n} example(s) contain chat control markers {', '.join(sorted(markers))} (first: {first}); "
                    "they are neutralized in training and checking, never used as control tokens")


def _sft_row(ex: Example, spec: Spec, copy: int) -> dict:
    rules = checks.rules_for(spec, ex)  # what on-policy DPO judges the SFT model's own answers with
    return {
        "id": ex.id if copy == 0 else f"{ex.id}#{copy + 1}",
        "messages": ex.prompt + [{"role": "assistant", "content": ex.answer}],
        "behaviors": sorted({r.behavior for r in rules}),
        "rules": [r.to_dict() for r in rules],
        "prompt_set": ex.row.set,
        "pending": pending.keys_in(ex.answer),
    }


def _dpo_rows(spec: Spec, ex: Example, pool: dpo.Donors, copy: int) -> list[dict]:
    rows = dpo.pairs_for(spec, ex, pool)
    for r in rows:
        if copy:
            r["id"] += f"#{copy + 1}"
        r["pending"] = pending.keys_in(r["chosen"][0]["content"], r["rejected"][0]["content"])
    return rows


def _composition(spec: Spec, train: list[dict], val: list[dict], cases: list[dict]) -> dict:
    """Share of rows showing each behavior and from each prompt set, per split."""
    splits = {"train": [r["behaviors"] for r in train], "val": [r["behaviors"] for r in val],
              "check": [sorted({x["behavior"] for x in c["rules"]}) for c in cases if c["split"] == "check"],
              "probe": [sorted({x["behavior"] for x in c["rules"]}) for c in cases if c["split"] == "probe"]}
    sets = {"train": [r["prompt_set"] for r in train], "val": [r["prompt_set"] for r in val],
            "check": [c["prompt_set"] for c in cases if c["split"] == "check"],
            "probe": [c["prompt_set"] for c in cases if c["split"] == "probe"]}
    out: dict = {"behaviors": {}, "prompt_sets": {}}
    for b in spec.behaviors:
        out["behaviors"][b.id] = {s: _count(sum(1 for bs in rows if b.id in bs), len(rows)) for s, rows in splits.items()}
        trigger = set(kinds.of(b).refused_sets(b))
        if trigger:
            out["behaviors"][b.id]["train_trigger"] = _count(sum(1 for r in train if r["prompt_set"] in trigger), len(train))
    for name in spec.prompts:
        out["prompt_sets"][name] = {s: _count(names.count(name), len(names)) for s, names in sets.items()}
    return out


def _count(n: int, total: int) -> dict:
    return {"rows": n, "share": round(n / total, 4) if total else 0.0}


def _enforce_min_share(spec: Spec, composition: dict, issues: Issues) -> None:
    for b in spec.behaviors:
        if not kinds.of(b).teaches:
            continue
        entry = composition["behaviors"][b.id]
        train = entry.get("train_trigger", entry["train"])
        if train["share"] + 1e-9 >= spec.split.min_share:
            continue
        total = sum(p["train"]["rows"] for p in composition["prompt_sets"].values())
        sets = ", ".join(f"prompts.{s}" for s in spec.scope(b))
        issues.add(("behaviors", b.index), f"behavior {b.id!r} is {train['share']:.1%} of training rows ({train['rows']} of {total}), "
                   f"below split.min_share {spec.split.min_share:.0%}: upsample it with `repeat: N` on {sets}, add prompts, "
                   "or lower split.min_share")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _input_files(spec: Spec) -> dict[str, str]:
    base = spec.path.parent
    rels = {ps.file for ps in spec.prompts.values() if ps.file} | {a.path for a in spec.answers.values() if a.path}
    return {rel: _sha((base / rel).read_bytes()) for rel in sorted(rels)}


def template_hashes(spec: Spec) -> dict[str, str]:
    root = templates_dir()
    used = ["test_suite.py.j2"] + sorted(f"frames/{ps.frame_library}.txt" for ps in spec.prompts.values() if ps.frames)
    return {name: _sha((root / name).read_bytes()) for name in dict.fromkeys(used)}


def _manifest(spec: Spec, files: dict[str, bytes], composition: dict, waiting: list) -> dict:
    def rows(name: str) -> int:
        return files[name].count(b"\n")

    return {
        "behavio_version": __version__,
        "spec": spec.id,
        "spec_file": spec.path.name,
        "spec_sha256": _sha(spec.source_text.encode("utf-8")),
        "inputs_sha256": _input_files(spec),
        "templates_sha256": template_hashes(spec),
        "counts": {"sft": rows("sft.jsonl"), "sft_val": rows("sft.val.jsonl"), "dpo": rows("dpo.jsonl"),
                   "dpo_val": rows("dpo.val.jsonl"), "checks": rows("checks.jsonl"), "pending": len(waiting)},
        "composition": composition,
        "thresholds": {b.id: spec.threshold(b.id) for b in spec.behaviors},
        "files_sha256": {name: _sha(data) for name, data in sorted(files.items())},
    }
