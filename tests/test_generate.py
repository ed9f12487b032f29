"""Exact greedy decoding: a model's generation_config.json changes nothing but where answers stop."""

from __future__ import annotations

import json
import pytest
import torch

from behavio.chat import encode_text, render_prompt
from behavio.generate import generate, stop_token_ids
from behavio.models import load_model, load_tokenizer

pytestmark = pytest.mark.pipeline

QUESTIONS = ["What is the sun?", "Tell me about rain and why it falls.", "Bread?"]
MAX_NEW = 12


def argmax_answer(model, tokenizer, question: str, stops: set[int]) -> list[int]:
    """The greedy answer by hand: one full forward per token, the top logit, stop at a stop token."""
    ids = encode_text(render_prompt([{"role": "user", "content": question}], tokenizer, "auto"), tokenizer)
    new: list[int] = []
    with torch.no_grad():
        while len(new) < MAX_NEW:
            token = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            if token in stops:
                break
            new.append(token)
    return new


@pytest.fixture
def opinionated_model(tmp_path, _smollm2_tokenizer_session):
    """A tiny model with varied greedy answers (weights drawn wider than the usual 0.02, which only
    repeats one token) and a generation_config.json that samples, penalizes repetition, bans n-gram
    repeats, suppresses a token, forces a minimum length and adds an EOS id the model does produce."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from conftest import TINY_LLAMA

    out = tmp_path / "opinionated"
    tokenizer = _smollm2_tokenizer_session
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                         initializer_range=0.2, **TINY_LLAMA)).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    plain = [argmax_answer(model, tokenizer, q, set(stop_token_ids(tokenizer))) for q in QUESTIONS]
    extra_eos = plain[0][3]  # the fourth token of the first greedy answer now ends answers
    suppressed = plain[1][1]
    config = json.loads((out / "generation_config.json").read_text())
    config.update({"do_sample": True, "temperature": 0.3, "top_k": 3, "repetition_penalty": 5.0,
                   "no_repeat_ngram_size": 1, "min_new_tokens": 8, "suppress_tokens": [suppressed],
                   "eos_token_id": [tokenizer.eos_token_id, extra_eos]})
    (out / "generation_config.json").write_text(json.dumps(config))
    return out, extra_eos, plain


def test_generation_is_the_argmax_loop_whatever_the_generation_config_says(opinionated_model):
    path, extra_eos, plain = opinionated_model
    model, tokenizer = load_model(path, quantization="none").eval(), load_tokenizer(path)
    assert model.generation_config.repetition_penalty == 5.0 and model.generation_config.do_sample  # it was read
    stops = stop_token_ids(tokenizer, model)
    assert extra_eos in stops and tokenizer.eos_token_id in stops
    expected = [argmax_answer(model, tokenizer, q, set(stops)) for q in QUESTIONS]
    assert expected[0] == plain[0][:3]  # the extra EOS id ends the first answer early
    assert expected[1] == plain[1]  # no tokens suppressed
    torch.manual_seed(1)
    for batch_size in (1, 3):
        answers = generate(model, tokenizer, [[{"role": "user", "content": q}] for q in QUESTIONS],
                           max_new_tokens=MAX_NEW, batch_size=batch_size)
        for answer, tokens in zip(answers, expected):
            assert answer.text == tokenizer.decode(tokens, skip_special_tokens=True).strip()
            assert answer.finished == (len(tokens) < MAX_NEW)
    assert model.generation_config.repetition_penalty == 5.0  # the model's own config is back after generating

    from peft import LoraConfig, get_peft_model  # the on-policy answers and checks generate through PEFT

    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).eval()  # lora_B = 0: same model
    answers = generate(wrapped, tokenizer, [[{"role": "user", "content": q}] for q in QUESTIONS],
                       max_new_tokens=MAX_NEW, batch_size=3)
    assert [a.text for a in answers] == [tokenizer.decode(t, skip_special_tokens=True).strip() for t in expected]


def test_stop_ids_include_the_models_own_eos_ids(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir, quantization="none"), load_tokenizer(tiny_model_dir)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, 7, 11]
    model.config.eos_token_id = 13
    stops = stop_token_ids(tokenizer, model)
    assert {7, 11, 13, tokenizer.eos_token_id} <= set(stops)
    assert len(stops) == len(set(stops))
    assert not {7, 11, 13} & set(stop_token_ids(tokenizer))
