"""The greedy decoding loop (behavio/decode.py) against a hand-written argmax loop on the tiny model:
batches, rows leaving at their stop, a shared prompt prefix, drafts right, wrong and partly right,
LoRA adapters of several checkpoints and the base in one batch (base weights untouched), batches cut to
the KV cache's memory bound."""

from __future__ import annotations

import pytest
import torch

import behavio.models
from behavio.decode import DecodeStats, Row, common_prefix, decode

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def chatty_dir(tmp_path_factory, _smollm2_tokenizer_session):
    """The tiny Llama with large random weights: unlike the conftest one (which repeats one token),
    it answers every prompt differently, with clear margins between its top two tokens."""
    from conftest import TINY_LLAMA
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(_smollm2_tokenizer_session), initializer_range=1.0, **TINY_LLAMA))
    out = tmp_path_factory.mktemp("chatty-model")
    model.save_pretrained(out)
    _smollm2_tokenizer_session.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny(chatty_dir):
    model = behavio.models.load_model(chatty_dir, quantization="none").eval()
    return model, behavio.models.load_tokenizer(chatty_dir)


_answers: dict = {}


def argmax_loop(model, prompt: list[int], limit: int, stops: set[int]) -> tuple[list[int], bool]:
    """Single-prompt greedy decoding the slow, obvious way: the whole sequence through the model every step."""
    key = (model, tuple(prompt), limit, tuple(sorted(stops)))  # the model itself: an id can be reused
    if key not in _answers:
        _answers[key] = _argmax_loop(model, prompt, limit, stops)
    return _answers[key]


def _argmax_loop(model, prompt: list[int], limit: int, stops: set[int]) -> tuple[list[int], bool]:
    ids, out = list(prompt), []
    with torch.no_grad():
        for _ in range(limit):
            token = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if token in stops:
                return out, True
            out.append(token)
            ids.append(token)
    return out, False


def prompts(tokenizer, n: int) -> list[list[int]]:
    """Chat prompts sharing the template header and system message, of different lengths."""
    from behavio.chat import encode_text, render_prompt

    convs = [[{"role": "system", "content": "Be brief."},
              {"role": "user", "content": "word " * (i % 4) + f"question number {i}?"}] for i in range(n)]
    return [encode_text(render_prompt(c, tokenizer), tokenizer) for c in convs]


def test_common_prefix_leaves_every_prompt_a_token_of_its_own():
    assert common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix([[7], [1, 2]]) == 0
    assert common_prefix([]) == 0


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_batched_answers_equal_single_prompt_greedy_decoding(tiny, batch_size):
    model, tokenizer = tiny
    rows = prompts(tokenizer, 7)
    reference = [argmax_loop(model, p, 9, set()) for p in rows]
    # stop tokens the random model really emits, at different points of different rows: rows leave early
    stops = {reference[0][0][3], reference[4][0][1]}
    reference = [argmax_loop(model, p, 9, stops) for p in rows]
    assert {finished for _, finished in reference} == {True, False}
    got = decode(model, [Row(p) for p in rows], max_new_tokens=9, stop_ids=sorted(stops), pad_id=0,
                 batch_size=batch_size)
    assert [(d.tokens, d.finished) for d in got] == reference


def test_rows_leaving_early_hand_their_place_in_the_cache_to_rows_still_decoding(tiny):
    from behavio.decode import decode_batch

    model, tokenizer = tiny
    rows = prompts(tokenizer, 8)
    limits = [2, 9, 3, 9, 1, 9, 2, 9]  # every other row leaves early, from the middle of the batch
    got = decode_batch(model, [Row(p) for p in rows], max_new_tokens=limits, stop_ids=[], pad_id=0)
    assert [d.tokens for d in got] == [argmax_loop(model, p, n, set())[0] for p, n in zip(rows, limits)]


def test_drafts_never_change_the_answer_and_good_ones_save_passes(tiny):
    model, tokenizer = tiny
    rows = prompts(tokenizer, 6)
    reference = [argmax_loop(model, p, 12, set())[0] for p in rows]
    plain, right, wrong, partly = DecodeStats(), DecodeStats(), DecodeStats(), DecodeStats()
    drafts = {
        "none": ([None] * 6, plain),
        "right": (reference, right),
        "wrong": ([[t + 1 for t in r] for r in reference], wrong),
        "partly": ([r[:4] + [r[4] + 1] + r[5:] for r in reference], partly),  # diverges at 4, then agrees again
    }
    for name, (draft, stats) in drafts.items():
        got = decode(model, [Row(p, draft=d) for p, d in zip(rows, draft)], max_new_tokens=12, stop_ids=[],
                     pad_id=0, batch_size=6, stats=stats)
        assert [d.tokens for d in got] == reference, name
    assert right.accepted == right.drafted > 0 and right.forwards < plain.forwards / 3
    assert wrong.accepted == 0 and wrong.drafted > 0
    assert 0 < partly.accepted < partly.drafted and partly.forwards < plain.forwards


def _three_adapters(tmp_path, chatty_dir):
    """Three checkpoints' adapters side by side on a fresh base: (prompts, each checkpoint's greedy 6-token answers
    when it runs alone, the adapters, their names by step, the base's weights before)."""
    from peft import PeftModel
    from test_check_engine import make_run

    from behavio.check.generation import Adapters

    run = make_run(tmp_path, chatty_dir)
    tokenizer = behavio.models.load_tokenizer(chatty_dir)
    rows = prompts(tokenizer, 3)
    reference = {}
    for step in (10, 20, 30):
        alone = PeftModel.from_pretrained(behavio.models.load_model(chatty_dir, quantization="none"),
                                          str(run / f"checkpoint-{step}")).eval()
        reference[step] = [argmax_loop(alone, p, 6, set())[0] for p in rows]
    base = behavio.models.load_model(chatty_dir, quantization="none").eval()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    adapters = Adapters(base)
    names = {step: adapters.load(run / f"checkpoint-{step}") for step in (10, 20, 30)}
    return rows, reference, adapters, names, before


def _assert_base_untouched(adapters, names: dict, before: dict) -> None:
    adapters.unload(list(names.values()))
    after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
             for k, v in adapters.model.state_dict().items() if "lora_" not in k}
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)


def test_rows_of_several_adapters_share_a_batch_and_leave_the_base_weights_untouched(tmp_path, chatty_dir):
    rows, reference, adapters, names, before = _three_adapters(tmp_path, chatty_dir)
    assert reference[10] != reference[20]  # the adapters do change the answers
    mixed = [Row(p, names[step], draft=reference[30][i] if step != 30 else None)
             for step in (10, 20, 30) for i, p in enumerate(rows)]
    got = decode(adapters.model, mixed, max_new_tokens=6, stop_ids=[], pad_id=0, batch_size=9)
    assert [d.tokens for d in got] == reference[10] + reference[20] + reference[30]
    _assert_base_untouched(adapters, names, before)


def test_the_base_model_answers_beside_its_adapters_in_one_batch(tmp_path, chatty_dir):
    from behavio.decode import BASE

    rows, reference, adapters, names, before = _three_adapters(tmp_path, chatty_dir)
    alone = behavio.models.load_model(chatty_dir, quantization="none").eval()
    base = [argmax_loop(alone, p, 6, set())[0] for p in rows]
    assert base != reference[20]
    mixed = [Row(p, adapter) for adapter in (BASE, names[20]) for p in rows]
    got = decode(adapters.model, mixed, max_new_tokens=6, stop_ids=[], pad_id=0, batch_size=6)
    assert [d.tokens for d in got] == base + reference[20]
    _assert_base_untouched(adapters, names, before)


def test_a_batch_keeps_its_kv_cache_within_the_memory_bound(tiny, monkeypatch):
    import behavio.decode

    model, tokenizer = tiny
    rows = prompts(tokenizer, 6)
    longest = max(map(len, rows))
    per_row = behavio.decode.CACHE_BYTES // behavio.decode.rows_that_fit(model, longest, 5, 10**9)
    monkeypatch.setattr(behavio.decode, "CACHE_BYTES", 2 * per_row + per_row // 2)  # room for 2 rows, not 3
    assert behavio.decode.rows_that_fit(model, longest, 5, 6) == 2
    assert behavio.decode.rows_that_fit(model, longest, 5, 1) == 1
    batches = []
    got = decode(model, [Row(p) for p in rows], max_new_tokens=5, stop_ids=[], pad_id=0, batch_size=6,
                 on_batch=lambda indices, _: batches.append(len(indices)))
    assert batches == [2, 2, 2]
    assert [d.tokens for d in got] == [argmax_loop(model, p, 5, set())[0] for p in rows]


def test_short_prompts_are_not_padded_to_the_longest_one(tiny):
    from behavio.chat import encode_text, render_prompt

    model, tokenizer = tiny
    users = ["Hi?", "Hi?", "Tell me, in many words, why the sky is blue at noon and red at dusk, please?"] * 2
    rows = [encode_text(render_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": u}],
                                      tokenizer), tokenizer) for u in users[:4]]
    shared = common_prefix(rows)
    assert len({len(r) for r in rows}) == 2 and max(map(len, rows)) > 2 * min(map(len, rows)) - shared
    stats = DecodeStats()
    got = decode(model, [Row(p) for p in rows], max_new_tokens=3, stop_ids=[], pad_id=0, batch_size=4, stats=stats)
    assert [d.tokens for d in got] == [argmax_loop(model, p, 3, set())[0] for p in rows]
    first_passes = shared + sum(len(p) - shared for p in rows)  # the shared prefix once, then every prompt's own tokens
    assert stats.positions == first_passes + 2 * len(rows)      # then one token per row per step, no holes
