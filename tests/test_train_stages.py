"""SFT and DPO stages on the tiny model: LoRA weights change, base weights do not; DPO continues the
SFT adapter against the right reference; QLoRA (4-bit) trains on CPU."""

from __future__ import annotations

import json

import pytest
import torch

from behavio.compiler.build import compile_spec
from behavio.models import load_tokenizer
from behavio.train.config import TrainConfig
from behavio.train.data import dpo_dataset, pick_rows, sft_dataset
from behavio.train.model import load_for_training, new_adapter, trained_adapter
from behavio.rundir import MetricsLog
from behavio.train.stage import Stage

pytestmark = pytest.mark.pipeline


def _config(tiny_model_dir, **kw) -> TrainConfig:
    settings = dict(base_model=str(tiny_model_dir), method=("sft", "dpo"), batch_size=4, save_steps=2, max_length=128,
                    logging_steps=1, eval_max_rows=0, max_steps=3, dpo_max_steps=3, lr=1e-3, dpo_lr=1e-3)
    return TrainConfig(**{**settings, **kw})


def _stage(name, run_dir, cfg, tiny_model_dir, **kw) -> Stage:
    return Stage(name, run_dir=run_dir, cfg=cfg, spec_hash="abc123", base_model=str(tiny_model_dir), cuda=False,
                 metrics=MetricsLog(run_dir, tensorboard=False), say=lambda _: None, **kw)


def _split(model):
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    return lora, base


def _rows(train_spec, cfg):
    return pick_rows(compile_spec(train_spec()), cfg)


def test_sft_then_dpo_train_only_the_adapter(tmp_path, tiny_model_dir, train_spec):
    from behavio.train.dpo import run_dpo
    from behavio.train.sft import run_sft

    cfg = _config(tiny_model_dir)
    rows, tokenizer = _rows(train_spec, cfg), load_tokenizer(tiny_model_dir)
    model = new_adapter(load_for_training(tiny_model_dir, cfg, cuda=False), cfg)
    lora0, base0 = _split(model)
    sft_last = run_sft(_stage("sft", tmp_path, cfg, tiny_model_dir), model, tokenizer,
                       sft_dataset(rows["sft"], tokenizer, cfg), None, [])
    lora1, base1 = _split(model)
    assert all(not torch.equal(lora0[n], lora1[n]) for n in lora1 if "lora_B" in n)
    assert all(torch.equal(base0[n], base1[n]) for n in base0)
    assert sft_last.name == "checkpoint-3"
    meta = json.loads((sft_last / "behavio.json").read_text())
    assert meta["complete"] is True and meta["stage"] == "sft" and meta["stage_final"] is True
    assert (meta["spec_hash"], meta["base_model"], meta["step"]) == ("abc123", str(tiny_model_dir), 3)

    model = trained_adapter(load_for_training(tiny_model_dir, cfg, cuda=False), sft_last)
    lora2, base2 = _split(model)
    assert all(torch.equal(lora1[n], lora2[n]) for n in lora2)  # DPO starts from the SFT adapter
    stage = _stage("dpo", tmp_path, cfg, tiny_model_dir, offset=3, init_from=sft_last.name)
    dpo_last = run_dpo(stage, model, tokenizer, dpo_dataset(rows["dpo"], tokenizer, cfg), None)
    lora3, base3 = _split(model)
    assert "ref" not in model.peft_config  # reference = this model with the adapter disabled
    assert all(not torch.equal(lora2[n], lora3[n]) for n in lora3 if "lora_B" in n)
    assert all(torch.equal(base0[n], base3[n]) for n in base0)
    assert dpo_last.name == "checkpoint-6"  # DPO continues the global step count
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3", "checkpoint-5",
                                                                     "checkpoint-6"]
    meta = json.loads((dpo_last / "behavio.json").read_text())
    assert (meta["stage"], meta["stage_step"], meta["init_from"]) == ("dpo", 3, "checkpoint-3")


@pytest.mark.parametrize("reference", ["base", "sft"])
def test_dpo_reference_is_base_or_the_frozen_sft_adapter(tmp_path, tiny_model_dir, train_spec, reference):
    """At the first step the policy is the SFT adapter: its rewards are 0 against itself, not against the base."""
    from behavio.train.dpo import run_dpo
    from behavio.train.sft import run_sft

    cfg = _config(tiny_model_dir, max_steps=2, dpo_max_steps=1, dpo_reference=reference, lr=5e-3)
    rows, tokenizer = _rows(train_spec, cfg), load_tokenizer(tiny_model_dir)
    model = new_adapter(load_for_training(tiny_model_dir, cfg, cuda=False), cfg)
    sft_last = run_sft(_stage("sft", tmp_path, cfg, tiny_model_dir), model, tokenizer,
                       sft_dataset(rows["sft"], tokenizer, cfg), None, [])
    model = trained_adapter(load_for_training(tiny_model_dir, cfg, cuda=False), sft_last)
    run_dpo(_stage("dpo", tmp_path, cfg, tiny_model_dir, offset=2), model, tokenizer,
            dpo_dataset(rows["dpo"], tokenizer, cfg), None)
    first = next(e for e in MetricsLog(tmp_path).read() if e["stage"] == "dpo" and "rewards/chosen" in e)
    if reference == "sft":
        assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
    else:
        assert abs(first["rewards/chosen"]) > 1e-4


def test_qlora_4bit_trains_on_cpu(tmp_path, tiny_model_dir, train_spec):
    import bitsandbytes as bnb

    from behavio.train.sft import run_sft

    cfg = _config(tiny_model_dir, quantization="4bit", max_steps=2)
    rows, tokenizer = _rows(train_spec, cfg), load_tokenizer(tiny_model_dir)
    model = new_adapter(load_for_training(tiny_model_dir, cfg, cuda=False), cfg)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    lora0, _ = _split(model)
    last = run_sft(_stage("sft", tmp_path, cfg, tiny_model_dir), model, tokenizer,
                   sft_dataset(rows["sft"], tokenizer, cfg), None, [])
    lora1, _ = _split(model)
    assert all(not torch.equal(lora0[n], lora1[n].to(lora0[n].dtype)) for n in lora1 if "lora_B" in n)
    assert (last / "adapter_model.safetensors").is_file() and last.name == "checkpoint-2"


def test_padding_free_sft_trains(tmp_path, tiny_model_dir, train_spec):
    from behavio.train.sft import run_sft

    cfg = _config(tiny_model_dir, padding_free=True, max_steps=1)
    rows, tokenizer = _rows(train_spec, cfg), load_tokenizer(tiny_model_dir)
    model = new_adapter(load_for_training(tiny_model_dir, cfg, cuda=False), cfg)
    last = run_sft(_stage("sft", tmp_path, cfg, tiny_model_dir), model, tokenizer,
                   sft_dataset(rows["sft"], tokenizer, cfg), None, [])
    assert last.name == "checkpoint-1"


def test_padding_free_rows_keep_examples_apart(tiny_model_dir):
    """padding_free/packing put several examples in one row told apart by position ids only. With the
    training setup (use_cache off) transformers turns those into a block-diagonal mask under sdpa, so
    the second example's logits equal its logits alone. (With use_cache on they would not: 0.5 apart.)"""
    model = load_for_training(tiny_model_dir, _config(tiny_model_dir), cuda=False).eval()
    a, b = torch.arange(10, 17).unsqueeze(0), torch.arange(40, 45).unsqueeze(0)
    position_ids = torch.cat([torch.arange(7), torch.arange(5)]).unsqueeze(0)
    with torch.no_grad():
        packed = model(input_ids=torch.cat([a, b], 1), position_ids=position_ids).logits[0, 7:]
        alone = model(input_ids=b).logits[0]
    assert (packed - alone).abs().max() < 1e-4


def test_a_cut_rejection_is_trained_without_an_end_of_turn(tiny_model_dir):
    """An on-policy answer cut at the token limit is rejected as text: no <|im_end|> after it."""
    from trl import DPOConfig

    from behavio.train.dpo import dpo_trainer_class

    cfg = _config(tiny_model_dir)
    tokenizer = load_tokenizer(tiny_model_dir)
    prompt = [{"role": "user", "content": "Tell me about poodles."}]
    refusal = [{"role": "assistant", "content": "I can't discuss poodles directly."}]
    own = "That's an intelligent question. Poodles are a curly breed that"
    pairs = [{"id": "cut", "prompt": prompt, "chosen": refusal, "rejected": [{"role": "assistant", "content": own}],
              "rejected_finished": False},
             {"id": "whole", "prompt": prompt, "chosen": refusal,
              "rejected": [{"role": "assistant", "content": own + " loves water."}]}]  # rule pairs: finished
    args = DPOConfig(output_dir="unused", per_device_train_batch_size=2, max_steps=1, report_to=[], use_cpu=True,
                     dataset_num_proc=None)
    trainer = dpo_trainer_class()(model=load_for_training(tiny_model_dir, cfg, cuda=False), args=args,
                                  processing_class=tokenizer, train_dataset=dpo_dataset(pairs, tokenizer, cfg))
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    cut, whole = trainer.train_dataset[0], trainer.train_dataset[1]
    assert tokenizer.decode(cut["rejected_ids"]).strip() == own
    assert end not in cut["rejected_ids"]
    assert end in whole["rejected_ids"] and end in cut["chosen_ids"]  # complete answers keep their end of turn


@pytest.mark.parametrize("alpha", [0.0, 5.0])
def test_neftune_noises_the_embeddings_of_training_steps_only(tmp_path, tiny_model_dir, train_spec, alpha):
    """``train.neftune_alpha``: the first decoder layer sees noised embeddings in SFT's training steps (clean ones
    without it, and in the anchor's pass of the base model); after training the model embeds as before."""
    from behavio.train.sft import run_sft

    cfg = _config(tiny_model_dir, max_steps=2, neftune_alpha=alpha)
    rows, tokenizer = _rows(train_spec, cfg), load_tokenizer(tiny_model_dir)
    model = new_adapter(load_for_training(tiny_model_dir, cfg, cuda=False), cfg)
    embed = model.get_input_embeddings()
    first_layer = model.base_model.model.model.layers[0]
    seen: list[tuple[bool, torch.Tensor, torch.Tensor]] = []  # (training, token ids, what the first layer got)
    ids: list[tuple[bool, torch.Tensor]] = []
    embed.register_forward_hook(lambda module, args, out: ids.append((module.training, args[0].detach().clone())))
    first_layer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((*ids[-1], (args[0] if args else kwargs["hidden_states"]).detach())),
        with_kwargs=True)
    run_sft(_stage("sft", tmp_path, cfg, tiny_model_dir), model, tokenizer, sft_dataset(rows["sft"], tokenizer, cfg),
            None, [])

    def noise(batch, hidden):
        return (hidden - embed.weight.detach()[batch]).abs().max().item()

    steps = [(noise(batch, hidden), hidden.shape) for training, batch, hidden in seen if training]
    assert len(steps) >= 2 and all(noise(b, h) == 0 for training, b, h in seen if not training)
    assert all((n > 0) == (alpha > 0) for n, _ in steps)
    assert all(n <= alpha / (shape[1] * shape[2]) ** 0.5 + 1e-6 for n, shape in steps)  # uniform, alpha / sqrt(L x d)
    seen.clear()
    model.train()
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3]]))
    assert noise(seen[0][1], seen[0][2]) == 0
