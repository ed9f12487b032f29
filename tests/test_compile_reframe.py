"""The reframed check split: a frame set's subjects asked in its partner library's frames (requests <-> howto,
problems -> support) that no set trains on, with the set's own rules; nothing of it is trained."""

from __future__ import annotations

import json
import re

import pytest

from behavio.compiler.build import compile_spec
from behavio.compiler.expand import frame_partners, load_frames

SPEC = """\
spec: reframe
system: "You are the support bot of a cinema."
vars:
  changes: [refund my tickets, swap my tickets to a later showing, cancel my booking, move my booking to Sunday,
            change my seats, exchange my tickets for another film, upgrade my seats to recliners]
  tickets: [book two tickets, find my booking reference, buy a gift card, check my gift card balance,
            use my student discount, book a wheelchair space, join the membership]
prompts:
  ticket_changes:
    frames: {library: requests, subjects: "{{ changes }}", per_frame: 1, exclude: [how]}
  ticket_info:
    frames: {library: howto, subjects: "{{ tickets }}", per_frame: 1, exclude: [at home, for a beginner]}
  complaints:
    frames: {library: problems, subjects: [my e-ticket, the seat map, my receipt, the app, my gift card], per_frame: 1}
  films:
    frames: {library: questions, subjects: [a plot twist, a director's cut, IMAX, a trailer, a 3D film], per_frame: 2}
answers:
  ticket_changes: {source: literal, template: "Open the booking in the app and choose Change."}
  ticket_info: {source: literal, template: "Do it in the app under Tickets."}
  complaints: {source: literal, template: "Sorry about that: reinstall the app and try again."}
  films: {source: literal, template: "That is a film term."}
behaviors:
  - id: change-policy
    kind: prefix
    choices: ["Changes are free up to an hour before the film."]
    applies_to: [ticket_changes]
ignore_warnings: [small-split]
split: {seed: 3, val: 0.1, check: 0.25, min_share: 0.01, reframed: REFRAMED}
"""


def compiled(tmp_path, reframed: str = "1"):
    path = tmp_path / "reframe.yaml"
    path.write_text(SPEC.replace("REFRAMED", reframed))
    return compile_spec(path)


def cases(result, split: str) -> list[dict]:
    return [c for c in map(json.loads, result.files["checks.jsonl"].decode().splitlines()) if c["split"] == split]


def trained_prompts(result) -> list[str]:
    return [json.loads(line)["messages"][-2]["content"]
            for name in ("sft.jsonl", "sft.val.jsonl") for line in result.files[name].decode().splitlines()]


def frame_of(prompt: str, library: str, subjects: list[str]) -> str | None:
    """The frame of ``library`` that ``prompt`` is, with one of ``subjects`` in it."""
    for frame in load_frames(library):
        if any(frame.replace("{{ subject }}", s) == prompt for s in subjects):
            return frame
    return None


def frame_pattern(frame: str) -> re.Pattern:
    return re.compile("^" + re.escape(frame).replace(re.escape("{{ subject }}"), ".+") + "$")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return compiled(tmp_path_factory.mktemp("reframe"))


CHANGES = ["refund my tickets", "swap my tickets to a later showing", "cancel my booking", "move my booking to Sunday",
           "change my seats", "exchange my tickets for another film", "upgrade my seats to recliners"]
TICKETS = ["book two tickets", "find my booking reference", "buy a gift card", "check my gift card balance",
           "use my student discount", "book a wheelchair space", "join the membership"]


def test_libraries_name_their_partners():
    assert frame_partners("requests") == ["howto"] and frame_partners("howto") == ["requests"]
    assert frame_partners("problems") == ["support"] and frame_partners("questions") == [] == frame_partners("pets")


def test_a_sets_subjects_are_asked_in_its_partner_librarys_frames_that_nothing_trains_on(result):
    trained = trained_prompts(result)
    for name, library, subjects in (("ticket_changes", "howto", CHANGES), ("ticket_info", "requests", TICKETS)):
        asked = [c["messages"][-1]["content"] for c in cases(result, "reframed") if c["prompt_set"] == name]
        assert asked, name
        for prompt in asked:
            frame = frame_of(prompt, library, subjects)
            assert frame is not None, (name, prompt)                 # a partner frame with one of the set's subjects
            assert not any(frame_pattern(frame).match(t) for t in trained), (name, frame)  # never trained, any subject
        assert len(set(asked)) == len(asked)


def test_as_many_as_the_sets_check_cases_and_none_for_a_library_without_partners(result):
    reframed = cases(result, "reframed")
    for name in ("ticket_changes", "ticket_info", "complaints"):
        check = [c for c in cases(result, "check") if c["prompt_set"] == name]
        assert len([c for c in reframed if c["prompt_set"] == name]) == len(check) > 0, name
    assert not [c for c in reframed if c["prompt_set"] == "films"]  # questions names no partner


def test_reframed_cases_carry_their_sets_rules(result):
    """A change question asked the how-to way must open with the prefix; a ticket question asked as a request
    must not (the prefix's elsewhere line)."""
    for c in cases(result, "reframed"):
        lines = {(r["behavior"], r.get("part")) for r in c["rules"]}
        if c["prompt_set"] == "ticket_changes":
            assert ("change-policy", None) in lines
        else:
            assert ("change-policy", "elsewhere") in lines, c["prompt_set"]


def test_the_sets_exclude_leaves_out_partner_frames_too(result):
    """ticket_changes excludes frames with "how" in them: most how-to frames, so without the exclude its how-to
    cases would hold some; ticket_info's own exclude (how-to frames) leaves those frames untrained for the others."""
    assert sum("how" in f.casefold() for f in load_frames("howto")) > 20  # 26 of 42
    asked = [c["messages"][-1]["content"] for c in cases(result, "reframed") if c["prompt_set"] == "ticket_changes"]
    assert asked and not any("how" in frame_of(p, "howto", CHANGES).casefold() for p in asked)


def test_zero_turns_it_off_and_training_data_does_not_change(tmp_path, result):
    off = compiled(tmp_path, "0")
    assert cases(off, "reframed") == [] and cases(result, "reframed")
    for name in ("sft.jsonl", "sft.val.jsonl", "dpo.jsonl"):
        assert off.files[name] == result.files[name], name
    assert [c["id"] for c in cases(off, "check")] == [c["id"] for c in cases(result, "check")]


def test_a_probe_is_never_asked_again_as_a_reframed_case(tmp_path, result):
    asked = [c["messages"][-1]["content"] for c in cases(result, "reframed") if c["prompt_set"] == "ticket_info"]
    path = tmp_path / "reframe.yaml"
    path.write_text(SPEC.replace("REFRAMED", "1") + f"probes:\n  ticket_info: [{json.dumps(asked[0])}]\n")
    again = compile_spec(path)
    assert [c["messages"][-1]["content"] for c in cases(again, "probe")] == [asked[0]]
    assert asked[0] not in [c["messages"][-1]["content"] for c in cases(again, "reframed")]


def test_it_is_off_unless_the_spec_asks(tmp_path, result):
    """Off by default (session 28: on three specs it found nothing the check split missed)."""
    path = tmp_path / "default.yaml"
    path.write_text(SPEC.replace(", reframed: REFRAMED", ""))
    default = compile_spec(path)
    assert cases(default, "reframed") == [] and cases(result, "reframed")
