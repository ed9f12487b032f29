"""Training data path (no training): assistant-only labels on four chat templates, system folding
identical in SFT and DPO, pair selection, and failing before training on untrainable examples."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from behavio.chat import load_chat_template
from behavio.errors import BehavioError
from behavio.train.config import TrainConfig
from behavio.train.data import dpo_records, select_pairs, sft_dataset

SYSTEM = "You are a terse assistant."
CONVERSATION = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "What is bread?"},
    {"role": "assistant", "content": "Good question. Bread is baked dough."},
    {"role": "user", "content": "And toast?"},
    {"role": "assistant", "content": "Toast is bread, browned."},
]
END_OF_TURN = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "mistral": None, "gemma": "<end_of_turn>"}


def _template(tokenizer, name):
    tokenizer.chat_template = load_chat_template(name)
    return tokenizer


@pytest.mark.parametrize("name", ["chatml", "llama3", "mistral", "gemma"])
def test_only_assistant_turns_and_their_end_marker_are_trained(smollm2_tokenizer, name):
    tokenizer = _template(smollm2_tokenizer, name)
    cfg = TrainConfig(max_length=256)
    ds = sft_dataset([{"id": "multi/0", "messages": CONVERSATION}], tokenizer, cfg)
    ids, labels = ds[0]["input_ids"], ds[0]["labels"]
    assert len(ids) == len(labels)
    trained = [i for i, label in zip(ids, labels) if label != -100]
    assert all(label in (-100, i) for i, label in zip(ids, labels))
    text = tokenizer.decode(trained)
    assert "Bread is baked dough." in text and "Toast is bread, browned." in text
    assert "What is bread?" not in text and "And toast?" not in text and SYSTEM not in text
    eot = END_OF_TURN[name] or tokenizer.eos_token  # Mistral closes assistant turns with the eos token
    assert text.count(eot) == 2, text  # each assistant turn learns to stop
    # the untrained part holds the prompt, system text included (folded into the user turn where needed)
    prompt_text = tokenizer.decode([i for i, label in zip(ids, labels) if label == -100])
    assert SYSTEM in prompt_text and "What is bread?" in prompt_text


@pytest.mark.parametrize("name, folded", [("chatml", False), ("mistral", True), ("gemma", True)])
def test_dpo_prompts_fold_the_system_message_like_sft(smollm2_tokenizer, name, folded):
    tokenizer = _template(smollm2_tokenizer, name)
    row = {"id": "p/0", "prompt": CONVERSATION[:2], "chosen": [CONVERSATION[2]],
           "rejected": [{"role": "assistant", "content": "Bread is baked dough."}]}
    record = dpo_records([row], tokenizer, TrainConfig(max_length=256))[0]
    roles = [m["role"] for m in record["prompt"]]
    assert roles == (["user"] if folded else ["system", "user"])
    if folded:
        assert record["prompt"][0]["content"] == f"{SYSTEM}\n\nWhat is bread?"
    sft = sft_dataset([{"id": "s/0", "messages": CONVERSATION[:3]}], tokenizer, TrainConfig(max_length=256))
    prompt_ids = [i for i, label in zip(sft[0]["input_ids"], sft[0]["labels"]) if label == -100]
    dpo_prompt = tokenizer.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(prompt_ids).strip() == dpo_prompt.strip()


def test_an_assistant_turn_cut_by_max_length_fails_naming_every_bad_example(smollm2_tokenizer):
    long = {"id": "general/0007", "messages": CONVERSATION[:2] + [{"role": "assistant", "content": "word " * 200}]}
    ok = {"id": "general/0001", "messages": CONVERSATION[:3]}
    with pytest.raises(BehavioError) as info:
        sft_dataset([ok, long, {**long, "id": "general/0009"}], smollm2_tokenizer, TrainConfig(max_length=64))
    text = str(info.value)
    assert text.startswith("2 of 3 SFT examples cannot be trained")
    assert "general/0007" in text and "general/0009" in text and "max_length=64" in text


def test_a_pair_whose_rejected_side_is_too_long_fails_too(smollm2_tokenizer):
    row = {"id": "p/1", "prompt": CONVERSATION[:2], "chosen": [CONVERSATION[2]],
           "rejected": [{"role": "assistant", "content": "blah " * 200}]}
    with pytest.raises(BehavioError, match=r"p/1 \(rejected\)"):
        dpo_records([row], smollm2_tokenizer, TrainConfig(max_length=64))


def test_pair_selection_keeps_every_violation_kind_and_is_seeded():
    rows = [{"id": f"{b}/{v}/{i}", "behavior": b, "violation": v}
            for b, v, n in [("a", "x", 50), ("a", "y", 5), ("b", "z", 2)] for i in range(n)]
    picked = select_pairs(rows, 9, seed=3)
    assert len(picked) == 9 and len({r["id"] for r in picked}) == 9
    assert Counter((r["behavior"], r["violation"]) for r in picked) == {("a", "x"): 4, ("a", "y"): 3, ("b", "z"): 2}
    assert picked == select_pairs(rows, 9, seed=3) and picked != select_pairs(rows, 9, seed=4)
    assert select_pairs(rows, None, seed=3) == rows


def test_training_fails_before_any_step_when_an_example_is_untrainable(train_spec, tmp_path):
    from behavio.train.pipeline import train

    with pytest.raises(BehavioError, match="cannot be trained") as info:
        train(train_spec(max_length=24), runs_dir=tmp_path / "runs", check=False, say=lambda _: None)
    assert "max_length=24" in str(info.value)
    run = next((tmp_path / "runs").iterdir())
    assert not list(run.glob("checkpoint-*")) and not (run / ".lock").exists()
    assert json.loads((run / "config.json").read_text())["max_length"] == 24


LONG_ANSWER_SPEC = """\
spec: hire
system: "You are a car hire company's assistant."
prompts:
  damage:
    frames: {library: questions, subjects: [a scratch on the door, a cracked windscreen, a dented bumper,
                                            a flat tyre, a broken mirror], per_frame: 1}
answers:
  damage: {source: literal, template: "LONG"}
behaviors:
  - {id: no-loops, kind: no_repetition}
"""


def test_long_answers_counts_each_assistant_turn_with_its_stop_token():
    from behavio.train.data import long_answers

    rows = [{"prompt_set": "a"}, {"prompt_set": "b"}, {"prompt_set": "c"}]
    labels = [[-100, -100, 5, 6, 7, 0], [-100, 5, 6, 0, -100, -100, 5, 0], [-100, 5, 6, 7, 8, 9, 0]]
    assert [(n, r["prompt_set"]) for n, r in long_answers(rows, labels, 3)] == [(4, "a"), (6, "c")]
    assert long_answers(rows, labels, 6) == []  # two turns of 3 are not one answer of 6


@pytest.mark.parametrize("limit, warned", [(24, True), (200, False)])
def test_the_run_says_which_training_answers_the_check_would_cut_off(tmp_path, smollm2_tokenizer, limit, warned):
    """redline_car_hire's first draft trained a 112-token answer under a 96-token check: it could only fail as
    unfinished. The run names the set before training."""
    from behavio.compiler.build import compile_spec
    from behavio.jsonio import write_jsonl
    from behavio.train.data import pick_rows
    from behavio.train.pipeline import build_datasets

    answer = "Take photos of the damage, report it in the app within 24 hours, and keep your agreement number to hand."
    (tmp_path / "hire.yaml").write_text(LONG_ANSWER_SPEC.replace("LONG", answer))
    cfg = TrainConfig(max_length=128)
    (tmp_path / "run" / "data").mkdir(parents=True)
    for name, split_rows in pick_rows(compile_spec(tmp_path / "hire.yaml"), cfg).items():
        write_jsonl(tmp_path / "run" / "data" / f"{name}.jsonl", split_rows)
    said = []
    build_datasets(tmp_path / "run", cfg, smollm2_tokenizer, said.append, check_tokens=limit)
    found = [line for line in said if "run longer than the check lets an answer write" in line]
    assert bool(found) == warned, said
    if warned:
        assert f"check.max_new_tokens={limit}" in found[0] and "prompt set 'damage'" in found[0]
