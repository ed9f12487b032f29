"""The model being trained: QLoRA on CPU keeps every 4-bit layer differentiable (bitsandbytes would
switch to an inference kernel after the first eval-mode pass and cut the gradients)."""

from __future__ import annotations

import pytest
import torch

from behavio.train.config import TrainConfig
from behavio.train.model import load_for_training, new_adapter

pytestmark = pytest.mark.pipeline


def test_qlora_on_cpu_still_trains_every_layer_after_an_eval_pass(tiny_model_dir):
    import bitsandbytes as bnb

    cfg = TrainConfig(base_model=str(tiny_model_dir), quantization="4bit", device="cpu", lora_r=4,
                      target_modules=("q_proj", "v_proj", "down_proj"))
    model = new_adapter(load_for_training(tiny_model_dir, cfg, cuda=False), cfg)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.1)  # lora_B starts at zero: no gradient reaches lora_A before
    ids = torch.tensor([[1, 5, 9, 200, 31, 7, 42, 8]])
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)  # an eval loss or the on-policy answers between training steps
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    lora_a = {n: p.grad for n, p in model.named_parameters() if "lora_A" in n}
    assert lora_a and all(g is not None and g.abs().sum() > 0 for g in lora_a.values()), \
        [n for n, g in lora_a.items() if g is None or g.abs().sum() == 0]
