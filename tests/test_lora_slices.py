"""LoRA adapters applied to row ranges of a batch (behavio/lora_slices.py): a layer's output on literal rows, rows
of the base and of several adapters in any order answering as each alone (rows leaving from the middle, each
adapter's rows kept together, PEFT's mixed-batch gathers never called), rsLoRA scaling, dropout and B's bias, the
base weights untouched, and the adapters that fall back to PEFT's path."""

from __future__ import annotations

import math

import pytest
import torch
from test_decode import _assert_base_untouched, _three_adapters, argmax_loop, chatty_dir, prompts  # noqa: F401

import behavio.models
from behavio.check.generation import Adapters
from behavio.decode import Row, decode_batch
from behavio.lora_slices import BASE, Runs, sliced_adapters

pytestmark = pytest.mark.pipeline


def _save_adapter(base_dir, out, seed: int, **config):
    """A LoRA adapter with random weights (B too, so that it changes the answers) saved at ``out``."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(behavio.models.load_model(base_dir, quantization="none"), LoraConfig(**config))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.5)
    model.save_pretrained(out, safe_serialization=True)
    return out


def _alone(base_dir, adapter, prompt: list[int], limit: int) -> list[int]:
    from peft import PeftModel

    model = behavio.models.load_model(base_dir, quantization="none").eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    return argmax_loop(model, prompt, limit, set())[0]


def _no_peft_mixed_batches(monkeypatch):
    from peft.tuners.lora import layer

    def refuse(*args, **kwargs):
        raise AssertionError("PEFT's mixed-batch forward was called")

    monkeypatch.setattr(layer.Linear, "_mixed_batch_forward", refuse)


def test_a_layer_adds_each_adapters_delta_to_its_own_rows_only(tmp_path, chatty_dir):
    """Literal: q_proj of the first layer on three rows (base, adapter a, adapter b) against the formula written out,
    with rsLoRA's alpha / sqrt(r) (16 / 2 = 8) and B's bias."""
    config = dict(r=4, lora_alpha=16, use_rslora=True, lora_bias=True, lora_dropout=0.3, target_modules=["q_proj"])
    adapters = Adapters(behavio.models.load_model(chatty_dir, quantization="none").eval())
    a = adapters.load(_save_adapter(chatty_dir, tmp_path / "a", 1, **config))
    b = adapters.load(_save_adapter(chatty_dir, tmp_path / "b", 2, **config))
    q = adapters.model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(3, 2, q.in_features)

    def expected(row: torch.Tensor, name: str | None) -> torch.Tensor:
        out = row @ q.base_layer.weight.T
        if name is not None:
            out = out + (row @ q.lora_A[name].weight.T @ q.lora_B[name].weight.T + q.lora_B[name].bias) * (16 / math.sqrt(4))
        return out

    with torch.inference_mode(), sliced_adapters(adapters.model, [BASE, a, b]) as runs:
        assert runs is not None
        runs.set([BASE, a, b])
        got = q(x)
    assert torch.allclose(got, torch.stack([expected(x[0], None), expected(x[1], a), expected(x[2], b)]), atol=1e-5)
    assert not torch.allclose(got[1], expected(x[1], None), atol=1e-3) and not torch.allclose(got[1], got[2], atol=1e-3)
    assert "forward" not in vars(q)  # PEFT's forward is back: with its active adapter (a), the same row
    with torch.inference_mode():
        assert adapters.model.active_adapter == a and torch.allclose(q(x[1:2]), got[1:2], atol=1e-6)


def test_rows_of_the_base_and_several_adapters_in_any_order_answer_as_each_alone(tmp_path, chatty_dir, monkeypatch):
    rows, reference, adapters, names, before = _three_adapters(tmp_path, chatty_dir)
    alone = behavio.models.load_model(chatty_dir, quantization="none").eval()
    base = [argmax_loop(alone, p, 6, set())[0] for p in rows]
    answers = {BASE: base, **{names[step]: reference[step] for step in (10, 20, 30)}}
    # interleaved: no adapter's rows are together in the input; limits make rows leave from the middle of the batch
    order = [(i, adapter) for i in range(3) for adapter in (names[30], BASE, names[10], names[20])]
    limits = [6, 2, 6, 4, 1, 6, 3, 6, 6, 5, 2, 6]
    passes = []
    set_runs = Runs.set
    monkeypatch.setattr(Runs, "set", lambda self, a: (set_runs(self, a), passes.append((self.runs, set(a))))[0])
    _no_peft_mixed_batches(monkeypatch)
    got = decode_batch(adapters.model, [Row(rows[i], adapter) for i, adapter in order], max_new_tokens=limits,
                       stop_ids=[], pad_id=0)
    assert [d.tokens for d in got] == [answers[adapter][i][:n] for (i, adapter), n in zip(order, limits)]
    assert len(passes) > 6 and any(len(names_in_pass) == 4 for _, names_in_pass in passes)
    assert all(len(runs) == len(names_in_pass) for runs, names_in_pass in passes)  # each adapter's rows together
    _assert_base_untouched(adapters, names, before)


def test_rslora_dropout_bias_and_all_linear_adapters_answer_as_each_alone(tmp_path, chatty_dir, monkeypatch):
    tokenizer = behavio.models.load_tokenizer(chatty_dir)
    rows = prompts(tokenizer, 2)
    paths = [_save_adapter(chatty_dir, tmp_path / "rs", 3, r=4, lora_alpha=16, use_rslora=True, lora_dropout=0.3,
                           target_modules="all-linear"),
             _save_adapter(chatty_dir, tmp_path / "bias", 4, r=2, lora_alpha=4, lora_bias=True,
                           target_modules=["k_proj", "o_proj", "down_proj"])]
    adapters = Adapters(behavio.models.load_model(chatty_dir, quantization="none").eval())
    names = [adapters.load(path) for path in paths]
    _no_peft_mixed_batches(monkeypatch)
    batch = [Row(p, name) for name in (BASE, *names) for p in rows]
    got = decode_batch(adapters.model, batch, max_new_tokens=5, stop_ids=[], pad_id=0)
    expected = [_alone(chatty_dir, path, p, 5) for path in (None, *paths) for p in rows]
    assert [d.tokens for d in got] == expected
    assert len({tuple(e) for e in expected}) == len(expected)  # every adapter changes the answers


@pytest.mark.parametrize("config", [dict(use_dora=True, target_modules=["q_proj"]),
                                    dict(target_modules=["q_proj", "embed_tokens"])], ids=["dora", "embedding"])
def test_adapters_the_row_ranges_cannot_take_leave_the_model_to_peft(tmp_path, chatty_dir, config):
    adapters = Adapters(behavio.models.load_model(chatty_dir, quantization="none").eval())
    plain = adapters.load(_save_adapter(chatty_dir, tmp_path / "plain", 5, r=4, target_modules=["q_proj"]))
    with sliced_adapters(adapters.model, [plain, BASE]) as runs:
        assert runs is not None
    other = adapters.load(_save_adapter(chatty_dir, tmp_path / "other", 6, r=4, **config))
    with sliced_adapters(adapters.model, [plain, other]) as runs:
        assert runs is None
    assert not any("forward" in vars(m) for m in adapters.model.modules())


def test_embedding_adapters_answer_through_peft_beside_the_base(tmp_path, chatty_dir):
    tokenizer = behavio.models.load_tokenizer(chatty_dir)
    rows = prompts(tokenizer, 2)
    path = _save_adapter(chatty_dir, tmp_path / "emb", 7, r=4, target_modules=["q_proj", "embed_tokens"])
    adapters = Adapters(behavio.models.load_model(chatty_dir, quantization="none").eval())
    name = adapters.load(path)
    got = decode_batch(adapters.model, [Row(p, a) for a in (BASE, name) for p in rows], max_new_tokens=4,
                       stop_ids=[], pad_id=0)
    assert [d.tokens for d in got] == [_alone(chatty_dir, a, p, 4) for a in (None, path) for p in rows]


def test_adapters_on_a_4bit_base_answer_as_each_alone(tmp_path, chatty_dir, monkeypatch):
    """bitsandbytes' 4-bit base layers take the row ranges too (PEFT's lora.bnb.Linear4bit)."""
    from peft import PeftModel
    from peft.tuners.lora import bnb

    tokenizer = behavio.models.load_tokenizer(chatty_dir)
    rows = prompts(tokenizer, 2)
    paths = [_save_adapter(chatty_dir, tmp_path / f"a{seed}", seed, r=4, target_modules=["q_proj", "v_proj"])
             for seed in (8, 9)]
    adapters = Adapters(behavio.models.load_model(chatty_dir, quantization="4bit", device="cpu").eval())
    names = [adapters.load(path) for path in paths]
    assert any(isinstance(m, bnb.Linear4bit) for m in adapters.model.modules())
    _no_peft_mixed_batches(monkeypatch)
    monkeypatch.setattr(bnb.Linear4bit, "_mixed_batch_forward", lambda *a, **k: pytest.fail("PEFT's mixed batch"))
    got = decode_batch(adapters.model, [Row(p, n) for n in (BASE, *names) for p in rows], max_new_tokens=4,
                       stop_ids=[], pad_id=0)

    def alone(path):
        model = behavio.models.load_model(chatty_dir, quantization="4bit", device="cpu").eval()
        return PeftModel.from_pretrained(model, str(path)).eval() if path is not None else model

    models = [alone(path) for path in (None, *paths)]
    expected = [argmax_loop(model, p, 4, set())[0] for model in models for p in rows]
    assert [d.tokens for d in got] == expected


def test_adapters_on_the_output_layer_answer_as_each_alone_beside_the_base(tmp_path, chatty_dir):
    """An adapter on the output layer leaves the batch to PEFT, and the head (applied outside the model's forward, to
    the captured hidden states) still gets each row's own adapter."""
    tokenizer = behavio.models.load_tokenizer(chatty_dir)
    rows = prompts(tokenizer, 2)
    paths = [_save_adapter(chatty_dir, tmp_path / f"head{seed}", seed, r=4, target_modules=["q_proj", "lm_head"])
             for seed in (8, 9)]
    adapters = Adapters(behavio.models.load_model(chatty_dir, quantization="none").eval())
    names = [adapters.load(path) for path in paths]
    got = decode_batch(adapters.model, [Row(p, a) for a in (BASE, *names) for p in rows], max_new_tokens=4,
                       stop_ids=[], pad_id=0)
    expected = [_alone(chatty_dir, a, p, 4) for a in (None, *paths) for p in rows]
    assert [d.tokens for d in got] == expected
    assert len({tuple(e) for e in expected}) == len(expected)  # every adapter changes the answers
    only_base = decode_batch(adapters.model, [Row(p, BASE) for p in rows], max_new_tokens=4, stop_ids=[], pad_id=0)
    assert [d.tokens for d in only_base] == expected[:len(rows)]
