"""``train.cpu_precision``: bf16 autocast for training on a CPU that multiplies bf16 natively, fp32 elsewhere;
the weights, the anchor's base-model pass and everything outside the training steps stay fp32."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from behavio.train.config import TrainConfig
from behavio.train.model import cpu_bf16, describe_cpu_precision, native_bf16, precision


def _cpu(monkeypatch, **flags):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, **flags})


@pytest.mark.parametrize("flags, setting, bf16", [
    ({"avx512_bf16": True}, "auto", True),
    ({"amx_bf16": True}, "auto", True),
    ({}, "auto", False),                      # a Zen 3: AVX2 only, where bf16 matmuls crawl
    ({"avx512_bf16": True}, "fp32", False),
    ({}, "bf16", True),                       # asked for: done, and the log says it will be slow
])
def test_cpu_training_is_bf16_only_where_the_cpu_multiplies_it_natively(monkeypatch, flags, setting, bf16):
    _cpu(monkeypatch, **flags)
    cfg = TrainConfig(cpu_precision=setting)
    assert precision(cfg, cuda=False) == {"bf16": bf16, "fp16": False, "use_cpu": True}
    assert cpu_bf16(cfg) is bf16
    line = describe_cpu_precision(cfg)
    assert ("bf16 autocast" in line) is bf16 and ("fp32" in line)
    if setting == "bf16" and not flags:
        assert "slow" in line


def test_an_unknown_cpu_counts_as_one_without_native_bf16(monkeypatch):
    def fails():
        raise RuntimeError("no cpuinfo")

    monkeypatch.setattr(torch.cpu, "get_capabilities", fails)
    assert native_bf16() is None and precision(TrainConfig(), cuda=False)["bf16"] is False


def test_cuda_keeps_its_own_precision_whatever_cpu_precision_says(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert precision(TrainConfig(cpu_precision="fp32"), cuda=True) == {"bf16": True, "fp16": False}


@pytest.mark.pipeline
@pytest.mark.parametrize("setting", ["fp32", "bf16"])
def test_sft_steps_compute_in_the_chosen_precision_and_weights_stay_fp32(tmp_path, tiny_model_dir, train_spec,
                                                                          setting):
    from behavio.compiler.build import compile_spec
    from behavio.models import load_tokenizer
    from behavio.rundir import MetricsLog
    from behavio.train.data import pick_rows, sft_dataset
    from behavio.train.model import load_for_training, new_adapter
    from behavio.train.sft import run_sft
    from behavio.train.stage import Stage

    cfg = TrainConfig(base_model=str(tiny_model_dir), method=("sft",), batch_size=4, save_steps=2, max_length=128,
                      logging_steps=1, eval_max_rows=0, max_steps=2, lr=1e-3, cpu_precision=setting)
    rows, tokenizer = pick_rows(compile_spec(train_spec()), cfg), load_tokenizer(tiny_model_dir)
    model = new_adapter(load_for_training(tiny_model_dir, cfg, cuda=False), cfg)
    lora0 = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    base0 = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    seen: list[tuple[bool, torch.dtype]] = []  # (training, the dtype a LoRA-wrapped projection computed in)
    proj = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    proj.register_forward_hook(lambda module, args, out: seen.append((torch.is_grad_enabled(), out.dtype)))
    stage = Stage("sft", run_dir=tmp_path, cfg=dataclasses.replace(cfg), spec_hash="abc", base_model=str(tiny_model_dir),
                  cuda=False, metrics=MetricsLog(tmp_path, tensorboard=False), say=lambda _: None)
    run_sft(stage, model, tokenizer, sft_dataset(rows["sft"], tokenizer, cfg), None, [])

    trained = {dtype for grad, dtype in seen if grad}
    assert trained == {torch.bfloat16 if setting == "bf16" else torch.float32}
    assert {dtype for grad, dtype in seen if not grad} <= {torch.float32}  # the anchor's pass of the base model
    assert all(p.dtype == torch.float32 for p in model.parameters())
    lora1 = {n: p.detach() for n, p in model.named_parameters() if "lora_B" in n}
    assert all(not torch.equal(lora0[n], lora1[n]) for n in lora0)
    assert all(torch.equal(base0[n], p.detach()) for n, p in model.named_parameters() if "lora_" not in n)
