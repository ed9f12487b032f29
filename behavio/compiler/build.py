"""Compile one spec, in memory: expand → compose → split → SFT / DPO / checks → files + manifest.

Nothing is written here; `behavio.compiler.output` writes the result atomically, so a spec
with errors leaves no file behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from behavio import __version__, kinds, pending
from behavio.check.cases import line_name, scoped_behaviors
from behavio.check.scorecard import GENERATED
from behavio.compiler import checks, dpo, proof, respell, rewrites
from behavio.compiler.compose import Composer, Example
from behavio.compiler.expand import PromptRow, expand_all, extra_rows, normalize, pair_rows
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
    accepted: list[str] = field(default_factory=list)  # warnings the spec accepts by name that this compile raised


def compile_spec(path: str | Path) -> Compiled:
    """Compile the spec at ``path``; raise SpecError with every problem found."""
    spec = load_spec(path)
    issues = Issues(spec)
    rows = expand_all(spec, issues)
    issues.raise_if_any()
    dealt: Counter = Counter()  # frames of each extra library handed out so far
    for behavior in spec.behaviors:
        for library, name in kinds.of(behavior).extra_phrasings(behavior, spec):
            added = extra_rows(spec, library, name, rows[name], issues, dealt[library])
            dealt[library] += len(added)
            rows[name] = rows[name] + added
    for behavior in spec.behaviors:
        kind = kinds.of(behavior)
        for library, name in kind.paired_prompts(behavior, spec):
            phrased = [spec.prompts[s] for s in kind.refused_sets(behavior)
                       if s in spec.prompts and spec.prompts[s].frame_library == library]
            rows[name] = rows[name] + pair_rows(spec, library, name, rows[name], issues, phrased)
    for behavior in spec.behaviors:
        texts = {name: [r.prompt for r in set_rows] for name, set_rows in rows.items()}
        for name, path, message in kinds.of(behavior).warnings(behavior, spec, texts):
            issues.warn(name, path, message)
    parts = split_rows(spec, rows, issues)
    issues.raise_if_any()
    composer = Composer(spec, issues)
    train = _compose(composer, parts.train)
    val = _compose(composer, parts.val)
    check = _compose(composer, parts.check)
    recall = _compose(composer, parts.recall)
    subject = _compose(composer, parts.subject)
    reframed = _compose(composer, parts.reframed)
    probes = _compose(composer, probe_rows(spec, issues), probe=True)
    issues.raise_if_any()
    held_out = {normalize(ex.row.prompt) for ex in check + recall + subject + reframed + probes}
    train += _augmented(spec, composer, train, held_out)
    train, respelled = respell.respelled(spec, train, held_out | {normalize(ex.row.prompt) for ex in val}, issues)
    respell.warn_copied_lines(spec, train, issues)
    paraphrases = _paraphrases(spec, composer, check + recall + subject)
    _warn_control_markers(train + val + check + recall + subject + reframed + probes, issues)

    rules = {ex.id: checks.rules_for(spec, ex) for ex in train + val}
    _prove_answers(train + val, rules, issues)
    sft_train = [_sft_row(ex, rules[ex.id], copy) for ex in train for copy in range(spec.prompts[ex.row.set].repeat)]
    sft_val = [_sft_row(ex, rules[ex.id], 0) for ex in val]
    dropped: Counter = Counter()
    dpo_train = _dpo_rows(spec, train, rules, dropped, composer.variant)
    dpo_val = _dpo_rows(spec, val, rules, Counter(), composer.variant)
    _warn_missing_pairs(spec, dpo_train, dropped, issues)
    cases = [checks.check_case(spec, ex, split).to_dict()
             for split, examples in (("check", check), ("recall", recall), ("subject", subject), ("reframed", reframed),
                                     ("paraphrase", paraphrases), ("probe", probes))
             for ex in examples]
    _warn_probe_coverage(spec, cases, issues)
    _assert_unique_ids(sft_train + sft_val + cases)
    composition = _composition(spec, sft_train, sft_val, cases)
    _enforce_min_share(spec, composition, issues)
    issues.raise_if_any()

    waiting = [{"key": k, **entry} for k, entry in sorted(composer.pending.items())]  # after DPO: it adds variants
    files = {
        "sft.jsonl": encode_jsonl(sft_train), "sft.val.jsonl": encode_jsonl(sft_val),
        "dpo.jsonl": encode_jsonl(dpo_train), "dpo.val.jsonl": encode_jsonl(dpo_val),
        "checks.jsonl": encode_jsonl(cases), "pending.jsonl": encode_jsonl(waiting),
    }
    files[suite_filename(spec.id)] = render_suite(spec).encode("utf-8")
    manifest = _manifest(spec, files, composition, waiting, _lines(spec, sft_train + sft_val + cases), parts.held_subjects,
                         respelled)
    files["manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    return Compiled(spec, files, manifest, issues.warnings, sorted(issues.accepted))


def _compose(composer: Composer, rows: list[PromptRow], probe: bool = False) -> list[Example]:
    return [ex for row in rows for ex in composer.compose_all(row, probe=probe)]


def _warn_control_markers(examples: list[Example], issues: Issues) -> None:
    """Warn (once per prompt set) when spec text or data holds chat control markers such as <|im_end|>."""
    found: dict[str, tuple[str, set[str], int]] = {}
    for ex in examples:
        texts = [m["content"] or "" for m in ex.prompt] + [ex.answer or "", ex.body or ""]
        markers = {m for t in texts for m in find_markers(t)}
        if markers:
            first, seen, n = found.get(ex.row.set, (ex.id, set(), 0))
            found[ex.row.set] = (first, seen | markers, n + 1)
    for name, (first, markers, n) in sorted(found.items()):
        where = ("prompts", name) if name in issues.spec.prompts else ("probes",)
        issues.warn("control-markers", where, f"{n} example(s) contain chat control markers {', '.join(sorted(markers))} (first: {first}); "
                    "they are neutralized in training and checking, never used as control tokens")


AUGMENT_STRIDE = 1_000_003  # an augmented copy's row index: another place in the cycles of DPO violations


def _augmented(spec: Spec, composer: Composer, train: list[Example], held_out: set[str]) -> list[Example]:
    """``augment`` rewritten copies of every training example (:data:`rewrites.TRAINING`): the same answer
    to the prompt as a user might type it. Copies never equal a checked prompt."""
    out = []
    for ex in train:
        for k in range(spec.augment_of(ex.row.set)):
            text = rewrites.rewrite(ex.row.prompt, rewrites.TRAINING, k + ex.row.index, f"{spec.split.seed}:augment")
            if normalize(text) in held_out or normalize(text) == normalize(ex.row.prompt):
                continue
            out.append(ex.asked_as(text, index=ex.row.index + (k + 1) * AUGMENT_STRIDE))  # cycles DPO violations on
    return out


def _paraphrases(spec: Spec, composer: Composer, held: list[Example]) -> list[Example]:
    """The ``paraphrase`` check split: a rewrite of ``split.paraphrase`` of the held-out check cases
    (:data:`rewrites.CHECK`, a family training never sees), seeded and spread over the prompt sets."""
    out = []
    for ex in held:
        rng = random.Random(f"{spec.split.seed}:paraphrase:{ex.id}")
        if rng.random() >= spec.split.paraphrase:
            continue
        text = rewrites.rewrite(ex.row.prompt, rewrites.CHECK, rng.randrange(len(rewrites.CHECK)), f"{spec.split.seed}")
        composed = composer.compose(dataclasses.replace(ex.row, prompt=text), probe=True)
        if composed is not None:
            out.append(composed)
    return out


def probe_rows(spec: Spec, issues: Issues) -> list[PromptRow]:
    """The hand-written probes as rows of their prompt sets; a repeated probe is dropped with a warning."""
    rows = []
    for name, texts in spec.probes.items():
        repeats: dict[str, list[int]] = {}  # a probe's normalized text -> where it is given again
        for i, text in enumerate(texts):
            key = normalize(text)
            if key in repeats:
                repeats[key].append(i)
                continue
            repeats[key] = []
            rows.append(PromptRow(name, i, text.strip()))
        for key, again in repeats.items():
            if again:
                times = "twice" if len(again) == 1 else f"{len(again) + 1} times"
                issues.warn("probe-repeated", ("probes", name, again[0]),
                            f"probe {texts[again[0]][:60]!r} is given {times}; scored once")
    return rows


def _prove_answers(examples: list[Example], rules: dict[str, list], issues: Issues) -> None:
    """Every answer compile writes passes its row's rules; what breaks one is an error where it was written.

    Answers still pending (the base model writes them) are judged after the fill; semantic rules are
    judged by the check (:mod:`behavio.compiler.proof`). Failures are grouped by where the answer came
    from and which rule it broke, with the first prompt as the example.
    """
    groups: dict[tuple, list[tuple[Example, proof.Broken]]] = {}
    for ex in examples:
        if pending.has_marker(ex.answer):
            continue
        for broken in proof.broken_rules(rules[ex.id], ex.prompt, ex.answer):
            where = ex.sources.get(broken.rule.behavior) or ex.sources.get("body") or ex.sources.get(ex.refused_by or "")
            groups.setdefault((where or ("prompts", ex.row.set), broken.rule.line), []).append((ex, broken))
    total = {name: sum(1 for ex in examples if ex.row.set == name) for name in {ex.row.set for ex in examples}}
    for (where, line), found in groups.items():
        ex, broken = found[0]
        note = f" ({ex.source_note})" if ex.source_note else ""
        issues.add(where, f"{len(found)} of {total[ex.row.set]} training answers of prompts.{ex.row.set} break their own "
                   f"rule {line} [{broken.rule.name}], e.g. the answer to {ex.row.prompt[:50]!r}{note}: {broken.explanation}")


def _sft_row(ex: Example, rules: list, copy: int) -> dict:
    """One SFT row; in a conversation only the last answer is trained (earlier assistant turns: ``weight: 0``)."""
    history = [{**m, "weight": 0} if m["role"] == "assistant" else m for m in ex.prompt]
    return {
        "id": ex.id if copy == 0 else f"{ex.id}#{copy + 1}",
        "messages": history + [{"role": "assistant", "content": ex.answer}],
        "behaviors": sorted({r.behavior for r in rules if r.part is None}),  # what the spec asks of this row
        "rules": [r.to_dict() for r in rules],  # what on-policy DPO judges the SFT model's own answers with
        "prompt_set": ex.row.set,
        "pending": pending.keys_in(ex.answer, *(m["content"] for m in ex.prompt)),
    }


def _dpo_rows(spec: Spec, examples: list[Example], rules: dict[str, list], dropped: Counter, variant) -> list[dict]:
    """Every example's DPO pairs, repeated like its SFT rows (``repeat: N``)."""
    donors = dpo.Donors(examples)
    out = []
    for ex in examples:
        pairs = dpo.pairs_for(spec, ex, donors, rules[ex.id], dropped, variant)
        for r in pairs:
            r["pending"] = pending.keys_in(r["chosen"][0]["content"], r["rejected"][0]["content"],
                                           *(m["content"] for m in r["prompt"]))
        for copy in range(spec.prompts[ex.row.set].repeat):
            out += [r if copy == 0 else {**r, "id": f"{r['id']}#{copy + 1}"} for r in pairs]
    return out


def _warn_missing_pairs(spec: Spec, dpo_train: list[dict], dropped: Counter, issues: Issues) -> None:
    """A behavior whose kind derives DPO pairs but got none (or lost some to the proof) is told why."""
    made = Counter(r["behavior"] for r in dpo_train)
    for b in spec.behaviors:
        if b.get("dpo", True) is False or not kinds.of(b).violation_names:
            continue
        lost = {v: n for (bid, v), n in dropped.items() if bid == b.id}
        lost_text = ", ".join(f"{n} {v}" for v, n in sorted(lost.items()))
        if not made[b.id]:
            why = (f"every rejected answer it derived ({lost_text}) failed to break its rule" if lost
                   else kinds.of(b).no_pairs_hint(b))
            issues.warn("no-dpo-pairs", ("behaviors", b.index), f"behavior {b.id!r} got no DPO pairs: {why}")
        elif lost:
            issues.warn("dpo-pairs-dropped", ("behaviors", b.index), f"behavior {b.id!r}: {lost_text} DPO pair(s) not written, their "
                        "rejected answer did not break its rule")


MIN_PROBES = 10  # a decision line with fewer hand-written probes is warned about (`few-probes`)


def _warn_probe_coverage(spec: Spec, cases: list[dict], issues: Issues) -> None:
    """Warn about each line of a decision -- a refusal and its contrast, a behavior scoped to some sets and its
    absence elsewhere -- that no hand-written probe asks (``unprobed``: its scorecard number will come from the
    spec's own templates alone, which predicted the probes worst exactly on these lines) or that fewer than
    :data:`MIN_PROBES` ask (``few-probes``: one probe is more than a tenth of its rate)."""
    scoped = scoped_behaviors(cases)
    generated: dict[str, list[str]] = {}
    probes: Counter = Counter()
    for case in cases:
        for rule in case["rules"]:
            if rule["kind"] != "refusal" and rule["behavior"] not in scoped:
                continue
            line = line_name(rule["behavior"], rule.get("part"))
            if case["split"] == "probe":
                probes[line] += 1
            elif case["split"] in GENERATED:
                generated.setdefault(line, []).append(case["prompt_set"])
    index = {b.id: b.index for b in spec.behaviors}
    for line, sets in sorted(generated.items(), key=lambda item: (index[item[0].split("/")[0]], item[0])):
        named, where = ", ".join(dict.fromkeys(sets)), ("behaviors", index[line.split("/")[0]])
        if not probes[line]:
            issues.warn("unprobed", where,
                        f"no hand-written probe asks scorecard line {line!r}: its number will come from held-out "
                        f"phrasings of the spec's own templates alone, which passed 96-100% on a spec whose probes "
                        f"passed 75-78% (kestrel_mobile, bench/SPEC_QUALITY.md). Write prompts as your users type "
                        f"them, before training, under `probes:` keyed by one of its sets ({named})")
        elif probes[line] < MIN_PROBES:
            issues.warn("few-probes", where,
                        f"scorecard line {line!r} has {probes[line]} hand-written probe(s): one of them is "
                        f"{100 / probes[line]:.0f} points of its rate, so its verdict turns on a single answer. Write "
                        f"{MIN_PROBES} or more (the README's checklist asks 15), before training, under `probes:` keyed "
                        f"by one of its sets ({named})")


def _assert_unique_ids(rows: list[dict]) -> None:
    """Content ids are unique (an internal guarantee, not a user error)."""
    ids = Counter(r["id"] for r in rows)
    repeated = [i for i, n in ids.items() if n > 1]
    if repeated:
        raise RuntimeError(f"compile produced repeated ids: {repeated[:3]}")


def _composition(spec: Spec, train: list[dict], val: list[dict], cases: list[dict]) -> dict:
    """Share of rows showing each behavior (rows where the spec asks for it, its parts aside) and from
    each prompt set, per split."""

    def asked(case: dict) -> set[str]:
        return {rule["behavior"] for rule in case["rules"] if not rule.get("part")}

    held = ("check", "recall", "subject", "reframed", "paraphrase", "probe")
    splits = {"train": [r["behaviors"] for r in train], "val": [r["behaviors"] for r in val],
              **{split: [asked(c) for c in cases if c["split"] == split] for split in held}}
    sets = {"train": [r["prompt_set"] for r in train], "val": [r["prompt_set"] for r in val],
            **{split: [c["prompt_set"] for c in cases if c["split"] == split] for split in held}}
    out: dict = {"behaviors": {}, "prompt_sets": {}}
    for b in spec.behaviors:
        out["behaviors"][b.id] = {s: _count(sum(1 for bs in rows if b.id in bs), len(rows)) for s, rows in splits.items()}
    for name in spec.prompts:
        out["prompt_sets"][name] = {s: _count(names.count(name), len(names)) for s, names in sets.items()}
    return out


def _count(n: int, total: int) -> dict:
    return {"rows": n, "share": round(n / total, 4) if total else 0.0}


def _enforce_min_share(spec: Spec, composition: dict, issues: Issues) -> None:
    for b in spec.behaviors:
        if not kinds.of(b).teaches:
            continue
        train = composition["behaviors"][b.id]["train"]
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
    rels |= {entry["file"] for entry in spec.located.data.get("probes", {}).values() if isinstance(entry, dict)}
    return {rel: _sha((base / rel).read_bytes()) for rel in sorted(rels)}


def template_hashes(spec: Spec) -> dict[str, str]:
    root = templates_dir()
    used = ["test_suite.py.j2"] + sorted(f"frames/{ps.frame_library}.txt" for ps in spec.prompts.values() if ps.frames)
    return {name: _sha((root / name).read_bytes()) for name in dict.fromkeys(used)}


def _lines(spec: Spec, rows: list[dict]) -> list[str]:
    """Every scorecard line of the spec: each behavior, then the parts the rules of ``rows`` use, in spec order."""
    used = {f"{r['behavior']}/{r['part']}" for row in rows for r in row["rules"] if r.get("part")}
    return [line for b in spec.behaviors
            for line in [b.id] + [f"{b.id}/{part}" for part in kinds.of(b).parts if f"{b.id}/{part}" in used]]


def _manifest(spec: Spec, files: dict[str, bytes], composition: dict, waiting: list, lines: list[str],
              held_subjects: list[str], respelled: dict) -> dict:
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
        "held_out_subjects": held_subjects,
        "respelled": respelled,
        "thresholds": {line: spec.threshold(line).to_dict() for line in lines},
        "files_sha256": {name: _sha(data) for name, data in sorted(files.items())},
    }
