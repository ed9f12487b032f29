"""Conversations: prompt sets of literal, templated and JSONL conversations; the behaviors judged on the last turn
(or each); earlier assistant turns given, written by the base model (filled in rounds) or composed; only the turn the
spec asks for trained (weight 0 on the rest); check cases that replay the conversation with the model under check;
and the shipped example, specs/concierge_chat.yaml, compiled, trained on the tiny model and checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from behavio import pending
from behavio.compiler.build import compile_spec
from behavio.errors import BehavioError, SpecError

ROOT = Path(__file__).resolve().parents[1]
REFUSAL = "I can't share which room a guest is staying in. I can call their room for you or take a message."


@pytest.fixture(scope="module")
def concierge():
    return compile_spec(ROOT / "specs" / "concierge_chat.yaml")


def _rows(compiled, name):
    return [json.loads(line) for line in compiled.files[name].decode().splitlines()]


def _user_turns(messages):
    return [m["content"] for m in messages if m["role"] == "user"]


# ---------------------------------------------------------------- compiling conversations

def test_a_refusal_late_in_a_templated_conversation_trains_only_the_refusal(concierge):
    rows = [r for r in _rows(concierge, "sft.jsonl") if r["prompt_set"] == "late_asks"]
    assert rows
    for row in rows:
        system, opener, earlier, ask, answer = row["messages"]
        assert system["role"] == "system" and opener["role"] == ask["role"] == "user"
        assert earlier["role"] == "assistant" and earlier["weight"] == 0  # context: never trained
        assert pending.keys_in(earlier["content"]) and set(pending.keys_in(earlier["content"])) <= set(row["pending"])
        assert answer == {"role": "assistant", "content": REFUSAL} and "weight" not in answer
    waiting = {w["key"]: w["messages"] for w in _rows(concierge, "pending.jsonl")}
    (key,) = pending.keys_in(rows[0]["messages"][2]["content"])
    assert waiting[key] == rows[0]["messages"][:2]  # the base model answers the opener alone


def test_a_follow_up_after_a_given_refusal_must_be_answered(concierge):
    rows = [r for r in _rows(concierge, "sft.jsonl") if r["prompt_set"] == "after_refusal"]
    assert rows and all(r["messages"][2] == {"role": "assistant", "content": REFUSAL, "weight": 0} for r in rows)
    assert all(r["rules"][0]["part"] == "contrast" and r["rules"][0]["args"]["expect"] == "answer" for r in rows)
    cases = [c for c in _rows(concierge, "checks.jsonl") if c["prompt_set"] == "after_refusal"]
    assert cases and all(c["messages"][2] == {"role": "assistant", "content": REFUSAL} for c in cases)  # given: kept
    over_refused = [p for p in _rows(concierge, "dpo.jsonl") if p["behavior"] == "no-room-numbers"
                    and p["prompt_set"] == "after_refusal"]
    assert {p["violation"] for p in over_refused} == {"over_refused"}
    assert all(p["prompt"][2]["content"] == REFUSAL for p in over_refused)


def test_judge_each_makes_every_turn_an_example_and_a_check_case(concierge):
    rows = [r for r in _rows(concierge, "sft.jsonl") if r["prompt_set"] == "guest_chats" and "#" not in r["id"]]
    firsts = [r for r in rows if len(r["messages"]) == 3]
    seconds = [r for r in rows if len(r["messages"]) == 5]
    assert firsts and seconds and len(firsts) + len(seconds) == len(rows)
    for row in seconds:  # the earlier turn is the spec's own answer (with its sign-off), as context
        earlier = row["messages"][2]
        assert earlier["weight"] == 0 and earlier["content"].endswith("\n\nEnjoy your stay at the Harbor!")
        assert row["messages"][-1]["content"].endswith("\n\nEnjoy your stay at the Harbor!")
    given = next(r for r in seconds if r["messages"][1]["content"] == "Hey there.")
    assert given["messages"][2]["content"] == "Hello! How can I help you today?\n\nEnjoy your stay at the Harbor!"
    cases = [c for c in _rows(concierge, "checks.jsonl") if c["prompt_set"] == "guest_chats"]
    later = [c for c in cases if len(c["messages"]) > 2]
    assert later and all(c["messages"][2] == {"role": "assistant", "content": None} for c in later)  # replayed
    assert all(any(r["behavior"] == "signs-off" for r in c["rules"]) for c in cases)


def test_check_cases_leave_base_model_turns_open_and_prompts_stay_held_out(concierge):
    cases = [c for c in _rows(concierge, "checks.jsonl") if c["prompt_set"] == "late_asks"]
    assert cases and all(c["messages"][2] == {"role": "assistant", "content": None} for c in cases)
    trained = {tuple(_user_turns(r["messages"])) for r in _rows(concierge, "sft.jsonl") + _rows(concierge, "sft.val.jsonl")}
    assert not trained & {tuple(_user_turns(c["messages"])) for c in cases}


SPEC = """\
spec: chats
prompts:
  chats:
    CHATS
answers:
  chats: {source: literal, template: "Sure."}
behaviors:
  - {id: polite, kind: prefix, choices: ["Hello."]}
split: {seed: 1, val: 0.1, check: 0.25, min_share: 0.05}
"""


def _spec(tmp_path, chats: str, extra: str = "") -> Path:
    path = tmp_path / "chats.yaml"
    path.write_text(SPEC.replace("CHATS", chats) + extra)
    return path


@pytest.mark.parametrize("chats, message", [
    ('conversations: [[{user: "a"}, {user: "b"}]]', "turn 2 is user; turns alternate user, assistant, user"),
    ('conversations: [[{user: "a"}, {assistant: "b"}]]', "a conversation ends with the user turn the spec answers"),
    ('conversations: [[{assistant: "a"}, {user: "b"}]]', "turn 1 is assistant"),
    ('conversation: [{user: "a"}]', "`conversation` is a template: give `each` or `file`"),
    ('conversations: [[{user: "a", assistant: "b"}]]', "a turn is one `user:` or `assistant:`, got user, assistant"),
])
def test_badly_formed_conversations_are_errors(tmp_path, chats, message):
    with pytest.raises(SpecError) as caught:
        compile_spec(_spec(tmp_path, chats))
    assert message in str(caught.value)


def test_messages_files_are_read_strictly(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": None},
                          {"role": "user", "content": f"and q{i}?"}]} for i in range(6)]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    compiled = compile_spec(_spec(tmp_path, "{file: chats.jsonl, field: messages}"))
    assert all(len(r["messages"]) == 4 for r in _rows(compiled, "sft.jsonl"))
    rows[3]["messages"].insert(0, {"role": "system", "content": "be nice"})
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SpecError, match=r"chats.jsonl:4: messages: message 1 has role 'system'"):
        compile_spec(_spec(tmp_path, "{file: chats.jsonl, field: messages}"))


def test_a_refused_set_cannot_judge_each_turn(tmp_path):
    spec = _spec(tmp_path, 'conversations: [[{user: "a"}, {assistant: }, {user: "b"}], [{user: "c"}, {assistant: }, '
                 '{user: "d"}], [{user: "e"}, {assistant: }, {user: "f"}]]\n    judge: each',
                 "").read_text().replace("  - {id: polite", "  - {id: never, kind: refusal, when: chats, responses: [No.]}\n  - {id: polite")
    (tmp_path / "r.yaml").write_text(spec)
    with pytest.raises(SpecError, match="judges each turn"):
        compile_spec(tmp_path / "r.yaml")


# ---------------------------------------------------------------- masking, fill rounds, replay

def test_only_the_last_assistant_turn_is_trained(smollm2_tokenizer):
    from behavio.chat import describe_trained_tokens, tokenize_with_assistant_mask

    messages = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "EARLIER ANSWER", "weight": 0},
                {"role": "user", "content": "And now?"}, {"role": "assistant", "content": "LAST ANSWER"}]
    trained = "".join(s.text for s in describe_trained_tokens(messages, smollm2_tokenizer) if s.trained)
    assert trained == "LAST ANSWER<|im_end|>"
    both = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
    assert "EARLIER ANSWER" in "".join(s.text for s in describe_trained_tokens(both, smollm2_tokenizer) if s.trained)
    tokens = tokenize_with_assistant_mask(messages, smollm2_tokenizer, None)
    assert smollm2_tokenizer.decode([t for t, m in zip(tokens["input_ids"], tokens["assistant_masks"]) if m]) == trained
    with pytest.raises(BehavioError, match="assistant turn 1 has weight 0.5"):
        tokenize_with_assistant_mask([{**messages[0]}, {**messages[1], "weight": 0.5}], smollm2_tokenizer, None)


def test_fill_writes_earlier_turns_first_and_answers_the_filled_conversation(tmp_path, monkeypatch, tiny_model_dir):
    from behavio.fill import fill_pending
    from behavio.generate import GenerationCache

    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    first = [{"role": "user", "content": "Hello."}]
    k1 = pending.key_for(first)
    second = first + [{"role": "assistant", "content": pending.marker(k1)}, {"role": "user", "content": "More?"}]
    k2 = pending.key_for(second)
    answers = fill_pending([{"key": k2, "messages": second}, {"key": k1, "messages": first}], str(tiny_model_dir),
                           max_new_tokens=4, device="cpu")
    assert set(answers) == {k1, k2}
    (cache_file,) = (tmp_path / "cache" / "answers").iterdir()
    written = {json.loads(line)["key"] for line in cache_file.read_text().splitlines()}
    filled = first + [{"role": "assistant", "content": answers[k1]}, {"role": "user", "content": "More?"}]
    assert written == {k1, pending.key_for(filled)}  # the second answer was written to the filled conversation
    with pytest.raises(BehavioError, match="earlier turn .* is not being written"):
        fill_pending([{"key": k2, "messages": second}], str(tiny_model_dir), max_new_tokens=4, device="cpu")
    assert GenerationCache  # imported for the cache format it documents


def test_replay_writes_open_turns_with_the_model_being_checked():
    from behavio.conversation import replay

    asked = []

    def answer(todo):
        asked.append(todo)
        return {k: f"answer to {m[-1]['content']}" for k, m in todo.items()}

    case = [{"role": "user", "content": "a"}, {"role": "assistant", "content": None}, {"role": "user", "content": "b"},
            {"role": "assistant", "content": None}, {"role": "user", "content": "c"}]
    out = replay({"case": case}, answer)["case"]
    assert [m["content"] for m in out] == ["a", "answer to a", "b", "answer to b", "c"]
    assert [len(t) for t in asked] == [1, 1] and list(asked[1].values())[0][1]["content"] == "answer to a"


def test_check_generation_replays_the_conversation(tmp_path, tiny_model_dir):
    from behavio.generate import GenerationCache, generate_cached
    from behavio.models import load_base

    base = load_base(tiny_model_dir, quantization="none", device="cpu")
    cache = GenerationCache(tmp_path, "tiny", {"t": 1})
    case = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": None}, {"role": "user", "content": "More?"}]
    gens, generated = generate_cached(base.model, base.tokenizer, {"case": case}, cache, max_new_tokens=3, batch_size=2)
    assert set(gens) == {"case"} and generated == 2  # the earlier turn, then the answer
    assert cache.get(pending.key_for(case[:1])) is not None
    again, generated = generate_cached(base.model, base.tokenizer, {"case": case}, cache, max_new_tokens=3, batch_size=2)
    assert generated == 0 and again["case"] == gens["case"]


# ---------------------------------------------------------------- the shipped example, trained and checked

@pytest.mark.pipeline
def test_the_concierge_spec_trains_on_the_tiny_model_and_is_checked(tmp_path, tiny_model_dir, monkeypatch, shipped_spec):
    import torch
    from safetensors.torch import load_file

    from behavio.train import train

    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    base_weights = (tiny_model_dir / "model.safetensors").read_bytes()
    result = train(shipped_spec("concierge_chat"), [], runs_dir=tmp_path / "runs",
                   say=lambda _: None, quiet=True)
    assert [c.stage for c in result.checkpoints] == ["sft", "dpo"]
    data = [json.loads(line) for line in (result.run_dir / "data" / "sft.jsonl").read_text().splitlines()]
    late = [r for r in data if r["prompt_set"] == "late_asks"]
    assert late and not any(pending.has_marker(m["content"]) for r in late for m in r["messages"])  # history filled
    lora = load_file(str(result.checkpoints[-1].path / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and torch.count_nonzero(v) for k, v in lora.items())
    assert (tiny_model_dir / "model.safetensors").read_bytes() == base_weights
    card = result.report.best
    assert {"no-room-numbers", "no-room-numbers/contrast", "signs-off"} <= set(card.lines)
    assert {c.prompt_set for c in card.cases} >= {"late_asks", "after_refusal", "guest_chats"}
    assert all(c.response is not None for c in card.cases)
    assert card.tag("privacy").total and card.tag("multi-turn").total


def test_each_checkpoint_writes_its_own_earlier_turns_in_the_check(tmp_path, tiny_model_dir):
    """The check's batched path (several adapters on one base) replays open turns per checkpoint, with the
    same answers as generating with that checkpoint alone."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from behavio.check.generation import Job, answer
    from behavio.generate import GenerationCache, generate_cached
    from behavio.models import load_base

    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                               LoraConfig(r=4, target_modules="all-linear"))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn_like(p) * 2.0)  # far apart: the two checkpoints answer differently
        model.save_pretrained(tmp_path / f"checkpoint-{seed}", safe_serialization=True)
        paths.append(tmp_path / f"checkpoint-{seed}")
    case = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": None}, {"role": "user", "content": "More?"}]
    plain = [{"role": "user", "content": "Hi."}]
    items = {"case": case, "plain": plain}
    jobs = [Job(p.name, p, GenerationCache(tmp_path / "cache", p.name, {"t": 1})) for p in paths]
    base = load_base(tiny_model_dir, quantization="none", device="cpu")
    generated = answer(base.model, base.tokenizer, jobs, items, max_new_tokens=4, batch_size=4)
    assert generated == 2 * 3  # per checkpoint: the plain case, the earlier turn, the conversation's answer
    for job, path in zip(jobs, paths):
        alone = PeftModel.from_pretrained(load_base(tiny_model_dir, quantization="none", device="cpu").model, str(path))
        expected, _ = generate_cached(alone, base.tokenizer, items, GenerationCache(tmp_path / "alone", path.name, {"t": 1}),
                                      max_new_tokens=4, batch_size=1)
        assert {k: job.cache.get(k) for k in items} == expected, job.label
        assert job.cache.get(pending.key_for(case[:1])) is not None  # its own earlier turn, cached
    assert jobs[0].answers[pending.key_for(case[:1])] != jobs[1].answers[pending.key_for(case[:1])]
