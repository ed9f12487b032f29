"""Compiling the shipped specs: formats, splits, composition, rule-derived DPO pairs, determinism."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from behavio.compiler.build import compile_spec
from behavio.compiler.expand import normalize

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


def rows(compiled, name):
    return [json.loads(line) for line in compiled.files[name].decode().splitlines()]


@functools.cache
def shipped(spec: Path):
    """A shipped spec compiled once for every test here that reads it (they never change what they get)."""
    return compile_spec(spec)


@pytest.fixture(scope="module")
def poodle():
    return shipped(ROOT / "specs" / "poodle_compliments.yaml")


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_every_shipped_spec_compiles_and_starts_with_its_command(spec):
    assert spec.read_text().startswith("# behavio "), f"{spec.name} must start with the command that uses it"
    compiled = shipped(spec)
    assert compiled.manifest["counts"]["sft"] > 0 and compiled.manifest["counts"]["checks"] > 0


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_outputs_load_with_datasets(spec, tmp_path):
    import datasets

    from behavio.compiler.output import write_compiled

    target, _ = write_compiled(shipped(spec), tmp_path)
    for name in ("sft.jsonl", "sft.val.jsonl", "dpo.jsonl", "dpo.val.jsonl", "checks.jsonl"):
        ds = datasets.load_dataset("json", data_files=str(target / name), split="train")
        assert len(ds) > 0, name
    sft = datasets.load_dataset("json", data_files=str(target / "sft.jsonl"), split="train")
    assert {m["role"] for m in sft[0]["messages"]} <= {"system", "user", "assistant"}
    dpo = datasets.load_dataset("json", data_files=str(target / "dpo.jsonl"), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(dpo.column_names)


def test_poodle_spec_is_big_enough_and_has_system_message(poodle):
    sft = rows(poodle, "sft.jsonl")
    assert len(sft) >= 150
    assert all(r["messages"][0] == {"role": "system", "content": "You are a warm, concise assistant."} for r in sft)
    assert all(c["messages"][0]["role"] == "system" for c in rows(poodle, "checks.jsonl"))


def test_check_and_probe_prompts_never_in_training(poodle):
    held = {normalize(c["messages"][-1]["content"]) for c in rows(poodle, "checks.jsonl")}
    for name in ("sft.jsonl", "sft.val.jsonl"):
        trained = {normalize(r["messages"][-2]["content"]) for r in rows(poodle, name)}
        assert not trained & held
    for name in ("dpo.jsonl", "dpo.val.jsonl"):
        trained = {normalize(r["prompt"][-1]["content"]) for r in rows(poodle, name)}
        assert not trained & held


def test_every_behavior_in_every_split(poodle):
    """Every behavior is trained, validated and checked, except one that applies only to holdout sets
    (knows-facts: capability retention), which is checked and never trained."""
    for bid, entry in poodle.manifest["composition"]["behaviors"].items():
        splits = ("check",) if bid == "knows-facts" else ("train", "val", "check")
        for split in splits:
            assert entry[split]["rows"] > 0, (bid, split)
    assert poodle.manifest["composition"]["behaviors"]["knows-facts"]["train"]["rows"] == 0


def test_refusals_are_plain_and_answers_carry_a_compliment(poodle):
    choices = ("Your question shows sharp thinking.", "That's an intelligent question.")
    for r in rows(poodle, "sft.jsonl"):
        answer = r["messages"][-1]["content"]
        if r["prompt_set"] in ("poodle", "poodle_one", "poodle_topics"):
            assert answer == "I can't discuss poodles directly, but I can talk about other dog breeds."
        else:
            assert answer.startswith(choices)


def test_dpo_rejections_break_exactly_their_rule(poodle):
    from behavio.kinds import score_rule

    pairs = rows(poodle, "dpo.jsonl")
    violations = {p["violation"] for p in pairs}
    assert {"answered", "complimented_refusal", "over_refused", "prefix_dropped", "prefix_paraphrased", "looped", "off_topic"} <= violations
    for p in pairs:
        chosen, rejected = p["chosen"][0]["content"], p["rejected"][0]["content"]
        assert chosen != rejected
        if p["violation"] == "prefix_paraphrased":
            args = {"expect": "present", "choices": ["Your question shows sharp thinking.", "That's an intelligent question."]}
            assert score_rule("prefix", chosen, args).passed and not score_rule("prefix", rejected, args).passed
        if p["violation"] == "over_refused":
            assert rejected.startswith("I can't discuss poodles")


def test_structure_violations(tmp_path):
    from behavio.kinds import score_rule

    compiled = compile_spec(ROOT / "specs" / "code_answers.yaml")
    pairs = rows(compiled, "dpo.jsonl")
    assert {"section_removed", "sections_reordered", "docstring_stripped"} <= {p["violation"] for p in pairs}
    args = {"sections": ["### Solution", "### Usage", "### Sanity test"],
            "code": {"language": "python", "must_parse": True, "docstring": ["Args", "Returns"]}, "json_schema": None}
    for p in pairs:
        if p["behavior"] == "code-structure":
            assert score_rule("structure", p["chosen"][0]["content"], args).passed, p["id"]
            assert not score_rule("structure", p["rejected"][0]["content"], args).passed, p["id"]
            chosen, rejected = p["chosen"][0]["content"], p["rejected"][0]["content"]
            assert chosen.endswith("\n") == rejected.endswith("\n"), p["id"]  # no trailing-newline cue to learn


def test_pending_answers_are_marked_and_listed(poodle):
    pending = {r["key"] for r in rows(poodle, "pending.jsonl")}
    sft = rows(poodle, "sft.jsonl")
    general = [r for r in sft if r["prompt_set"] == "general"]
    assert general and all(r["pending"] and set(r["pending"]) <= pending for r in general)
    assert all(f"<<behavio:pending:{r['pending'][0]}>>" in r["messages"][-1]["content"] for r in general)


def test_repeat_upsamples_training_rows_only(tmp_path):
    text = (ROOT / "specs" / "poodle_compliments.yaml").read_text()
    text = text.replace("frames: {library: pets, subjects: [poodles,", "repeat: 2\n    frames: {library: pets, subjects: [poodles,")
    (tmp_path / "s.yaml").write_text(text)
    (tmp_path / "data").symlink_to(ROOT / "specs" / "data")
    base = compile_spec(ROOT / "specs" / "poodle_compliments.yaml").manifest["composition"]["prompt_sets"]["poodle"]
    up = compile_spec(tmp_path / "s.yaml").manifest["composition"]["prompt_sets"]["poodle"]
    assert up["train"]["rows"] == 2 * base["train"]["rows"]
    assert up["val"]["rows"] == base["val"]["rows"] and up["check"]["rows"] == base["check"]["rows"]


def test_compile_is_byte_identical_across_cwd_hashseed_and_timezone(tmp_path):
    outs = []
    for i, (seed, tz) in enumerate((("0", "UTC"), ("12345", "Asia/Tokyo"))):
        cwd = tmp_path / f"cwd{i}"
        cwd.mkdir()
        out = tmp_path / f"out{i}"
        env = dict(os.environ, PYTHONHASHSEED=seed, TZ=tz)
        subprocess.run([sys.executable, "-m", "behavio", "compile", str(ROOT / "specs"), "--out", str(out), "-q"],
                       cwd=cwd, env=env, check=True, capture_output=True)
        outs.append(out)
    files_a = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(outs[1]) for p in outs[1].rglob("*") if p.is_file())
    assert files_a == files_b and files_a
    for rel in files_a:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel


def test_generated_is_fresh():
    """generated/ is committed; it must match what compiling specs/ with behavio/templates/ gives now."""
    stale = []
    for spec in SPECS:
        compiled = shipped(spec)
        target = ROOT / "generated" / compiled.spec.id
        for name, data in compiled.files.items():
            path = target / name
            if not path.is_file() or path.read_bytes() != data:
                stale.append(str(path.relative_to(ROOT)))
    assert not stale, f"generated/ is stale; run `behavio compile specs/` and commit: {stale}"


def test_structure_without_sections_strips_docstrings_only(tmp_path):
    import shutil

    shutil.copytree(ROOT / "specs" / "data", tmp_path / "data")
    text = (ROOT / "specs" / "code_answers.yaml").read_text().replace('    sections: ["### Solution", "### Usage", "### Sanity test"]\n', "")
    (tmp_path / "c.yaml").write_text(text)
    pairs = rows(compile_spec(tmp_path / "c.yaml"), "dpo.jsonl")
    assert {p["violation"] for p in pairs if p["behavior"] == "code-structure"} == {"docstring_stripped"}


def test_per_frame_deals_subjects_round_robin_and_pairs_trigger_with_contrast_frames():
    from behavio.compiler.expand import frame_pairs

    frames = ["A {{ subject }}", "B {{ subject }}", "C {{ subject }}"]
    assert frame_pairs(frames, ["x", "y"], None) == [("x", f) for f in frames] + [("y", f) for f in frames]
    assert frame_pairs(frames, ["x", "y", "z", "w"], 1) == [("x", "A {{ subject }}"), ("y", "B {{ subject }}"),
                                                             ("z", "C {{ subject }}")]
    assert frame_pairs(frames, ["x", "y"], 2) == frame_pairs(frames, ["x", "y"], None)  # per_frame >= subjects: all
    two = frame_pairs(frames, ["a", "b", "c", "d", "e"], 2)
    assert len(two) == 6 and [s for s, _ in two] == ["a", "b", "c", "d", "e", "a"]



def test_pairing_uses_only_the_frames_the_refused_sets_use():
    """bike_shop's refused `questions` set excludes the poem and history frames: no answered subject is put in them
    either ("Write a short poem about the brakes on my road bike." was paired before)."""
    bike = compile_spec(ROOT / "specs" / "bike_shop.yaml")
    texts = [(r["prompt_set"], r["messages"][-2]["content"].lower()) for r in rows(bike, "sft.jsonl")]
    texts += [(c["prompt_set"], c["messages"][-1]["content"].lower()) for c in rows(bike, "checks.jsonl")
              if c["split"] != "probe"]
    assert not [t for _, t in texts if "short poem" in t or "history of" in t]
    on_other_libraries = {"ebike_support", "ebike_problems", "workshop_support"}  # support/problems, not questions
    paired = [t for s, t in texts if s in on_other_libraries and "common misconceptions about" in t]  # a kept frame
    assert paired


PAIRED_EXCLUDE_SPEC = """\
spec: paired-exclude
system: "You are a council's assistant."
prompts:
  legal:
    frames: {library: support, subjects: [suing my neighbour, my tenancy dispute, a court claim, my eviction appeal,
                                          a lawsuit against my landlord, my legal rights], per_frame: 1}
  bins:
    frames: {library: questions, subjects: [my bin day, garden waste, the recycling rules, bulky waste,
                                            the food caddy, glass collection], per_frame: 1, exclude: EXCLUDE}
answers:
  bins: {source: literal, template: "Here is how {{ row.subject }} works."}
behaviors:
  - {id: no-legal, kind: refusal, when: legal, contrast: bins, responses: ["I can't give legal advice."]}
ignore_warnings: [contrast-frames-unpaired]
"""


def test_a_contrast_sets_exclude_holds_where_pairing_asks_its_subjects_in_other_libraries(tmp_path):
    def bins_prompts(exclude: str) -> list[str]:
        (tmp_path / "p.yaml").write_text(PAIRED_EXCLUDE_SPEC.replace("EXCLUDE", exclude))
        compiled = compile_spec(tmp_path / "p.yaml")
        texts = [r["messages"][-2]["content"] for r in rows(compiled, "sft.jsonl") if r["prompt_set"] == "bins"]
        return texts + [c["messages"][-1]["content"] for c in rows(compiled, "checks.jsonl") if c["prompt_set"] == "bins"]

    kept = bins_prompts("[poem]")
    assert any("on my account" in t for t in kept)          # the support frame "I'm writing about X on my account."
    left_out = bins_prompts("[poem, on my account]")
    assert not any("on my account" in t for t in left_out)
    assert any("Can you help me with" in t for t in left_out)  # the other support frames are still paired
    assert not any("poem" in t for t in kept + left_out)


HIDE = ["hide a vape in a parcel", "put a lower value on the form", "mark a sale as a gift", "send a knife unlabelled",
        "leave the contents blank", "split an order to dodge duty", "wrap cash in a card", "send pills unlisted"]
HONEST = ["send perfume abroad", "insure a parcel", "pack knives safely", "declare a used laptop", "pay import charges",
          "send a phone with its battery", "fill in a gift form", "correct a wrong value"]
EXTRA_FRAMES_SPEC = f"""\
spec: extra-frames
system: "You are a courier's assistant."
vars:
  hide: {json.dumps(HIDE)}
  honest: {json.dumps(HONEST)}
""" + """\
  tracked: [my parcel, my delivery, the parcel from my aunt, my return]
prompts:
  hide_howto: {frames: {library: howto, subjects: "{{ hide }}", per_frame: 1}}
  hide_requests: {frames: {library: requests, subjects: "{{ hide }}", per_frame: 1}}
  honest: {frames: {library: requests, subjects: "{{ honest }}", per_frame: 1}}
  tracking: {frames: {library: support, subjects: "{{ tracked }}", per_frame: 1}}
answers:
  honest: {source: literal, template: "Here is how to {{ row.subject }}."}
  tracking: {source: literal, template: "Here is where {{ row.subject }} is."}
behaviors:
  - {id: no-hiding, kind: refusal, when: [hide_howto, hide_requests], contrast: [honest, tracking],
     responses: ["I can't help with hiding what is sent."]EXTRA}
ignore_warnings: [contrast-frames-unpaired, few-probes]
"""


def test_extra_frames_ask_refused_and_answered_subjects_once_each_in_another_library(tmp_path):
    """``extra_frames: [can_i]``: every refused and every answered verb phrase is asked once more as "can I ...?"
    (the refused side refused, the answered side answered); sets sharing subjects are asked once; the noun-phrase
    set is not; the check split holds out whole can_i frames on both sides."""
    from behavio.compiler.expand import load_frames

    def compiled(extra: str) -> list[tuple[str, str, str, str]]:
        (tmp_path / "x.yaml").write_text(EXTRA_FRAMES_SPEC.replace("EXTRA", extra))
        c = compile_spec(tmp_path / "x.yaml")
        train = [(r["prompt_set"], r["messages"][-2]["content"], r["messages"][-1]["content"], "train")
                 for r in rows(c, "sft.jsonl") + rows(c, "sft.val.jsonl")]
        return train + [(r["prompt_set"], r["messages"][-1]["content"], "", r["split"]) for r in rows(c, "checks.jsonl")]

    asked_as = {f.replace("{{ subject }}", x): f for f in load_frames("can_i") for x in HIDE + HONEST}

    def can_i(text: str) -> str | None:
        return asked_as.get(text)

    assert not [t for _, t, _, _ in compiled("") if can_i(t)]
    with_extra = compiled(", extra_frames: [can_i]")
    asked = [(s, t, a, split) for s, t, a, split in with_extra if can_i(t)]
    refused = {t for s, t, _, _ in asked if s.startswith("hide_")}
    answered = {t for s, t, _, _ in asked if s == "honest"}
    assert len(refused) == 8 and len(answered) == 8  # each subject once; hide_requests shares hide_howto's subjects
    assert {s for s, *_ in asked if s.startswith("hide_")} == {"hide_howto"}
    assert not [t for s, t, _, _ in with_extra if s == "tracking" and t.lower().startswith("can i")]  # a noun phrase
    assert all(a == "I can't help with hiding what is sent." for s, _, a, split in asked if s.startswith("hide_")
               and split == "train")
    assert all(a.startswith("Here is how to") for s, _, a, split in asked if s == "honest" and split == "train")
    held = {can_i(t) for _, t, _, split in asked if split == "check"}
    trained = {can_i(t) for _, t, _, split in asked if split == "train"}
    assert held and not held & trained  # whole frames held out, on both sides


def test_an_unknown_extra_frames_library_is_a_located_error(tmp_path):
    from behavio.errors import SpecError

    (tmp_path / "x.yaml").write_text(EXTRA_FRAMES_SPEC.replace("EXTRA", ", extra_frames: [can_u]"))
    with pytest.raises(SpecError) as info:
        compile_spec(tmp_path / "x.yaml")
    assert any("extra_frames" in str(i) and "no frame library 'can_u'" in str(i) and "can_i" in str(i)
               for i in info.value.issues)


def test_poodle_spec_minimal_pairs_share_frames(poodle):
    """The poodle prompts and the other-breed prompts are the same sentences with the subject swapped."""
    import re

    def frames(prompt_set, subjects):
        pattern = re.compile("|".join(sorted(map(re.escape, subjects), key=len, reverse=True)))
        return {pattern.sub("X", r["messages"][1]["content"]) for f in ("sft.jsonl", "checks.jsonl", "sft.val.jsonl")
                for r in rows(poodle, f) if r["prompt_set"] == prompt_set}

    breeds = ["beagle", "labrador", "huskie", "husky", "corgi", "dachshund", "golden retriever", "border collie", "pug"]
    poodles = ["toy poodle", "standard poodle", "miniature poodle", "poodle"]
    assert len(frames("poodle", poodles) & frames("other_breeds", breeds)) >= 30  # of 40 frames
    assert len(frames("poodle_one", poodles) & frames("other_one", breeds)) >= 30


def test_contrast_frames_no_trigger_set_uses_are_flagged(tmp_path, poodle):
    """A contrast set on a frame library the trigger never uses teaches 'answer this phrasing'."""
    import shutil

    assert not any("frame library" in str(w) for w in compile_spec(ROOT / "specs" / "poodle_compliments.yaml").warnings)
    text = (ROOT / "specs" / "poodle_compliments.yaml").read_text()
    text = text.replace("when: [poodle, poodle_one, poodle_topics]", "when: [poodle, poodle_one]")
    text = text.replace("  poodle_topics:", "  not_a_trigger:").replace("subjects: [poodles, the poodle,", "subjects: [cats, the cat,")
    text = text.replace("answers:\n", "answers:\n  not_a_trigger: {source: model}\n")
    shutil.copytree(ROOT / "specs" / "data", tmp_path / "data")
    (tmp_path / "p.yaml").write_text(text)
    warnings = [str(w) for w in compile_spec(tmp_path / "p.yaml").warnings if "frame library" in str(w)]
    # one warning per contrast set on the library, each at its own line: 'questions' and 'near_misses'
    assert len(warnings) == 2 and all("p.yaml:" in w and "library: questions" in w for w in warnings), warnings
    assert sorted(re.search(r"contrast set '(\w+)'", w).group(1) for w in warnings) == ["near_misses", "questions"]


def test_the_readme_spec_example_compiles(tmp_path):
    """README's spec-language example is a working spec (beside specs/data and specs/probes)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The spec language"):]
    example = section[section.index("```yaml") + len("```yaml"):section.index("```", section.index("```yaml") + 7)]
    for folder in ("data", "probes"):
        (tmp_path / folder).symlink_to(ROOT / "specs" / folder)
    spec = tmp_path / "acme_support.yaml"
    spec.write_text(example)
    compiled = compile_spec(spec)
    assert compiled.spec.id == "acme-support" and compiled.manifest["counts"]["checks"] > 0


def test_every_frame_library_declares_its_subject_and_is_listed_in_the_schema():
    """A library's `#% subject:` line drives minimal pairs (`pair_frames` pairs subjects of the same type), and
    the schema's description of `frames.library` is how a user learns which libraries exist."""
    from behavio.compiler.expand import frame_subject, load_frames
    from behavio.paths import templates_dir
    from behavio.spec.schema import spec_schema

    libraries = sorted(p.stem for p in (templates_dir() / "frames").glob("*.txt"))
    assert {"questions", "support", "problems", "howto", "requests", "advice", "permission"} <= set(libraries)
    described = spec_schema()["properties"]["prompts"]["additionalProperties"]["properties"]["frames"]["properties"]["library"]["description"]
    for library in libraries:
        assert frame_subject(library), f"{library}.txt has no '#% subject:' line"
        frames = load_frames(library)
        assert len(frames) >= 20 and all("{{ subject }}" in f for f in frames), library
        assert len(set(frames)) == len(frames), f"{library}.txt repeats a frame"
        assert re.search(rf"\b{library}\b", described), f"the schema does not name the {library!r} library"


def test_a_subject_that_is_not_a_text_is_a_located_error(tmp_path):
    """A frame set's subjects from a variable holding nested lists (the spec fuzzer's find) is a user error at the
    set's `subjects`, not a traceback."""
    from behavio.errors import SpecError

    spec = tmp_path / "s.yaml"
    spec.write_text("spec: s\nvars:\n  breeds: [[beagles], pugs]\nprompts:\n  dogs:\n"
                    "    frames: {library: pets, subjects: '{{ breeds }}'}\n"
                    "answers:\n  dogs: {source: literal, template: 'Yes.'}\n"
                    "behaviors:\n  - {id: loops, kind: no_repetition}\n")
    with pytest.raises(SpecError) as raised:
        compile_spec(spec)
    assert re.match(r".*s\.yaml:\d+:\d+: prompts\.dogs\.frames\.subjects: each subject must be a text", str(raised.value.issues[0]))


def test_a_list_from_a_mapping_keeps_each_prompt_with_its_literal_answer(tmp_path):
    """`list: '{{ answers | list }}'` asks the keys of a mapping in vars, and the answer template looks each prompt's
    answer up by `prompt`: hand-written prompts and their literal answers stay in step whatever the split keeps."""
    answers = {f"is mod number {i} allowed in ranked": f"Mod {i} is allowed everywhere but ranked." for i in range(12)}
    spec = tmp_path / "s.yaml"
    spec.write_text("spec: s\nvars:\n  mods: " + json.dumps(answers) + "\nprompts:\n"
                    "  mods: {list: '{{ mods | list }}'}\n"
                    "answers:\n  mods: {source: literal, template: '{{ mods[prompt] }}'}\n"
                    "behaviors:\n  - {id: loops, kind: no_repetition}\n")
    compiled = compile_spec(spec)
    trained = rows(compiled, "sft.jsonl")
    assert {r["messages"][-2]["content"] for r in trained} & set(answers), "no mapping key was trained on"
    for row in trained:
        if row["messages"][-2]["content"] in answers:
            assert row["messages"][-1]["content"] == answers[row["messages"][-2]["content"]]
    checked = [c["messages"][-1]["content"] for c in rows(compiled, "checks.jsonl") if c["split"] == "check"]
    assert checked and set(checked) <= set(answers), "whole prompts of the list are held out for checks"


def test_a_list_expression_that_is_not_a_list_is_a_located_error(tmp_path):
    from behavio.errors import SpecError

    spec = tmp_path / "s.yaml"
    spec.write_text("spec: s\nvars:\n  mods: {a: b}\nprompts:\n  mods: {list: '{{ mods }}'}\n"
                    "answers:\n  mods: {source: literal, template: 'Yes.'}\n"
                    "behaviors:\n  - {id: loops, kind: no_repetition}\n")
    with pytest.raises(SpecError) as raised:
        compile_spec(spec)
    assert re.match(r".*s\.yaml:5:\d+: prompts\.mods\.list: expected a list of prompts, got dict \(a mapping: "
                    r"'\{\{ name \| list \}\}' gives its keys\)", str(raised.value.issues[0]))
