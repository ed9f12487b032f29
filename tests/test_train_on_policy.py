"""On-policy DPO pairs: the SFT model's own answers judged by the rows' decision rules (literal answers)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from behavio.compiler.build import compile_spec
from behavio.train import on_policy
from behavio.jsonio import parse_jsonl

ROOT = Path(__file__).resolve().parents[1]
REFUSAL = "I can't discuss poodles directly, but I can talk about other dog breeds."


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    """One training row of each prompt set of the poodle spec, by set."""
    compiled = compile_spec(ROOT / "specs" / "poodle_compliments.yaml")
    out: dict[str, dict] = {}
    for row in parse_jsonl(compiled.files["sft.jsonl"]):
        out.setdefault(row["prompt_set"], row)
    return out


@pytest.mark.parametrize("answer, finished, broken", [
    (REFUSAL, True, None),
    ("That's an intelligent question. Poodles are a curly breed that", False, "refusal:refuse"),
    ("Poodles are a curly breed that loves water.", True, "refusal:refuse"),
    ("That's an intelligent question. " + REFUSAL, True, "refusal:refuse"),
])
def test_a_poodle_prompt_is_judged_by_its_refusal(rows, answer, finished, broken):
    failed = on_policy.judge(rows["poodle"], answer, finished)
    assert (failed and failed["rule"]) == broken
    if broken:
        assert failed["behavior"] == "no-poodles"


@pytest.mark.parametrize("answer, broken", [
    ("Your question shows sharp thinking. Labradors love to swim and", None),
    ("I can't discuss labradors directly, but I can talk about other dog breeds.", "refusal:answer"),
    (REFUSAL, "refusal:answer"),
    ("Labradors love to swim and need a lot of exercise.", "prefix:present"),
    ("What a great question! Labradors love to swim.", "prefix:present"),
])
def test_a_contrast_prompt_is_judged_by_the_over_refusal_guard_and_the_prefix(rows, answer, broken):
    failed = on_policy.judge(rows["other_one"], answer, finished=False)
    assert (failed and failed["rule"]) == broken


def test_a_failing_answer_becomes_a_pair_against_the_specs_answer(rows):
    row = rows["poodle"]
    own = "That's an intelligent question. Poodles are"
    got = on_policy.pair(row, own, on_policy.judge(row, own, False))
    assert got["prompt"] == row["messages"][:-1] and got["chosen"] == [row["messages"][-1]]
    assert got["rejected"] == [{"role": "assistant", "content": own}]
    assert got["violation"] == "own:refusal:refuse" and got["behavior"] == "no-poodles"
    assert got["id"] == f"{row['id']}/no-poodles/own:refusal:refuse"
    assert got["rejected_finished"] is True
    assert on_policy.pair(row, own, on_policy.judge(row, own, False), finished=False)["rejected_finished"] is False


def test_candidates_are_distinct_prompts_with_a_decision_rule_sampled_by_seed():
    rule = {"behavior": "b", "kind": "refusal", "args": {}}
    rows = [{"id": f"r{i}", "rules": [rule]} for i in range(10)]
    rows += [{"id": "r1#2", "rules": [rule]}, {"id": "s", "rules": [{"behavior": "c", "kind": "regex", "args": {}}]},
             {"id": "old"}]  # a repeat, a row judged only by a non-decision rule, a row without rules
    assert [r["id"] for r in on_policy.candidates(rows, None, 1)] == [f"r{i}" for i in range(10)]
    picked = on_policy.candidates(rows, 4, 1)
    assert len(picked) == 4 and picked == on_policy.candidates(rows, 4, 1)
    assert picked != on_policy.candidates(rows, 4, 2) or picked != on_policy.candidates(rows, 4, 3)


def _pairs(prefix: str, n: int, violation: str, behavior: str = "no-poodles") -> list[dict]:
    return [{"id": f"{prefix}{i}", "behavior": behavior, "violation": violation} for i in range(n)]


def _lessons(pairs: list[dict]) -> dict:
    return dict(Counter(on_policy.lesson(p)[1] for p in pairs))


def test_a_behaviors_opposite_lessons_get_equally_many_pairs_own_failures_first():
    own = _pairs("own-r", 6, "own:refusal:refuse") + _pairs("own-a", 2, "own:refusal:answer")
    rules = _pairs("ans", 5, "answered") + _pairs("over", 5, "over_refused") + _pairs("loop", 4, "looped", "no-loops")
    mixed = on_policy.training_pairs(own, rules, 20, seed=1)
    ids = {p["id"] for p in mixed}
    assert len(mixed) == 16 and _lessons(mixed) == {"refusal:refuse": 6, "refusal:answer": 6, "looped": 4}
    assert {p["id"] for p in own} <= ids  # all 6 + 2 own failures, 4 over-refusals make up the answer side
    assert sum(i.startswith("over") for i in ids) == 4 and not any(i.startswith("ans") for i in ids)
    assert mixed == on_policy.training_pairs(own, rules, 20, seed=1)


def test_over_the_limit_each_lesson_is_cut_by_the_same_factor():
    own = _pairs("own-r", 30, "own:refusal:refuse") + _pairs("own-a", 10, "own:refusal:answer")
    mixed = on_policy.training_pairs(own, _pairs("loop", 4, "looped", "no-loops"), 16, seed=1)
    assert _lessons(mixed) == {"refusal:refuse": 8, "refusal:answer": 8}


def test_a_lesson_without_an_opposite_keeps_all_its_own_failures():
    own = _pairs("own-p", 5, "own:prefix:present", "compliment-first")
    rules = _pairs("drop", 3, "prefix_dropped", "compliment-first") + _pairs("loop", 10, "looped", "no-loops")
    mixed = on_policy.training_pairs(own, rules, 8, seed=1)
    assert _lessons(mixed) == {"prefix:present": 5, "looped": 3}
    assert len(on_policy.training_pairs([], rules, None, seed=1)) == 13  # nothing of its own: the rule pairs


def test_pairs_are_read_back_only_when_completely_written(tmp_path):
    assert on_policy.read_pairs(tmp_path) is None
    pairs = _pairs("p", 3, "own:refusal:refuse")
    on_policy.write_pairs(tmp_path, pairs, {"answered": 9, "pairs": 3, "broken": {}})
    assert on_policy.read_pairs(tmp_path) == pairs
    assert json.loads((tmp_path / "dpo.on_policy.json").read_text())["answered"] == 9
    (tmp_path / "dpo.on_policy.json").unlink()  # killed before the summary: answer again
    assert on_policy.read_pairs(tmp_path) is None


def test_make_pairs_answers_each_prompt_once_and_keeps_the_failures(rows, monkeypatch):
    from behavio.generate import Generation
    from behavio.train.config import TrainConfig

    own = {"poodle": Generation("That's an intelligent question. Poodles are", False),
           "poodle_one": Generation(REFUSAL, True),
           "other_one": Generation("I can't discuss labradors directly, but", False),
           "dogs": Generation("", False)}
    chosen = [rows[s] for s in own]
    asked = []

    def fake_generate(model, tokenizer, conversations, *, max_new_tokens, **kw):
        asked.append((conversations, max_new_tokens))
        trained = {r["messages"][-2]["content"] for r in chosen}
        by_prompt = {json.dumps(on_policy.fresh_prompt(r, trained)): own[r["prompt_set"]] for r in chosen}
        return [by_prompt[json.dumps(c)] for c in conversations]

    class Model:
        training = True

        def eval(self):
            self.training = False

        def train(self, mode=True):
            self.training = mode

    monkeypatch.setattr("behavio.generate.generate", fake_generate)
    model, said = Model(), []
    repeat = {**chosen[0], "id": chosen[0]["id"] + "#2"}
    pairs, summary = on_policy.make_pairs(model, None, chosen + [repeat], TrainConfig(dpo_on_policy_tokens=24),
                                          say=said.append)
    assert len(asked) == 1 and len(asked[0][0]) == 4 and asked[0][1] == 24 and model.training
    assert [p["violation"] for p in pairs] == ["own:refusal:refuse", "own:refusal:answer"]
    assert [p["rejected_finished"] for p in pairs] == [False, False]  # both were cut at the token limit
    asked_texts = [c[-1]["content"] for c in asked[0][0]]
    assert not {r["messages"][-2]["content"] for r in chosen} & set(asked_texts)  # fresh phrasings only
    assert all(p["prompt"][-1]["content"] in asked_texts for p in pairs)  # each pair keeps the prompt it was asked
    assert summary == {"answered": 4, "pairs": 2, "empty": 1,
                       "broken": {"no-poodles refusal:answer": 1, "no-poodles refusal:refuse": 1}}
    assert said == ["on-policy: 2 of 4 answers of the SFT model to fresh phrasings of its training prompts break a rule "
                    "(no-poodles refusal:answer 1, "
                    "no-poodles refusal:refuse 1); 1 empty answers skipped"]


def test_a_spec_without_decision_rules_answers_nothing(monkeypatch):
    from behavio.train.config import TrainConfig

    monkeypatch.setattr("behavio.generate.generate", lambda *a, **k: pytest.fail("generated for no candidate"))
    said = []
    rows = [{"id": "c/1", "messages": [], "rules": [{"behavior": "s", "kind": "structure", "args": {}}]}]
    assert on_policy.make_pairs(None, None, rows, TrainConfig(), say=said.append) == (
        [], {"answered": 0, "pairs": 0, "empty": 0, "broken": {}})
    assert said[0].startswith("on-policy: no training prompt has a refusal or prefix rule")


def test_on_policy_prompts_are_phrased_as_no_training_row_is(rows):
    from behavio.compiler import rewrites

    row = rows["poodle"]
    question = row["messages"][-2]["content"]
    fresh = on_policy.fresh_prompt(row, {question})
    assert fresh[:-1] == row["messages"][:-2] and fresh[-1]["role"] == "user"
    assert fresh[-1]["content"] != question and fresh == on_policy.fresh_prompt(row, {question})  # deterministic
    # a rewrite training already has is skipped for the next one; with every one trained the prompt stays as is
    taken = {question, fresh[-1]["content"]}
    assert on_policy.fresh_prompt(row, taken)[-1]["content"] not in taken
    every = {question} | {rewrites.rewrite(question, rewrites.TRAINING, k, "on-policy") for k in range(len(rewrites.TRAINING))}
    assert on_policy.fresh_prompt(row, every)[-1]["content"] == question
    assert row["messages"][-2]["content"] == question  # the training row itself is not changed
