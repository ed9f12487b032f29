"""Weaker copies of the last checkpoint (``train.strengths``): the copy applies exactly ``s`` times the
checkpoint's LoRA update, the run directory treats it as a checkable checkpoint that is never resumed from,
and the budget reserves its check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from behavio.errors import BehavioError
from behavio.rundir import (complete_checkpoints, incomplete_checkpoints, newest_complete, scan_checkpoints,
                            write_json)
from behavio.train.strengths import scaled_config, write_variants


def test_the_scaled_config_scales_every_alpha_and_refuses_dora():
    config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "alpha_pattern": {"q_proj": 32}, "use_dora": False}
    scaled = scaled_config(config, 0.75)
    assert scaled["lora_alpha"] == 12 and scaled["alpha_pattern"] == {"q_proj": 24} and scaled["r"] == 8
    assert config["lora_alpha"] == 16  # the original is left alone
    with pytest.raises(BehavioError, match="DoRA"):
        scaled_config({**config, "use_dora": True}, 0.75)


def test_a_copys_name_is_one_the_run_directory_recognizes():
    from behavio.rundir import is_checkpoint_name, is_scaled_copy
    from behavio.train.strengths import variant_name

    assert [variant_name(139, s) for s in (0.8, 0.05, 0.125, 0.01)] == [
        "checkpoint-139-x0.8", "checkpoint-139-x0.05", "checkpoint-139-x0.125", "checkpoint-139-x0.01"]
    assert all(is_scaled_copy(variant_name(7, s)) for s in (0.01, 0.00001, 0.5, 0.999999))
    assert is_checkpoint_name("checkpoint-7") and not is_scaled_copy("checkpoint-7")


def _checkpoint(run: Path, step: int, model) -> Path:
    """A complete, resumable checkpoint of ``model``'s LoRA adapter (B made nonzero, so it changes the model)."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    path = run / f"checkpoint-{step}"
    model.save_pretrained(path)
    (path / "trainer_state.json").write_text("{}")
    write_json(path / "behavio.json", {"step": step, "stage": "sft", "complete": True, "metrics": {"loss": 1.0}})
    return path


@pytest.fixture
def lora_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
                        alpha_pattern={"up_proj": 16})
    return get_peft_model(base, config)


def test_a_copy_applies_that_share_of_the_checkpoints_update(tmp_path, tiny_model_dir, lora_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    source = _checkpoint(run, 6, lora_model)
    (last,) = complete_checkpoints(run)
    lines = []
    (copy,) = write_variants(run, last, [1.0, 0.5], lines.append)
    assert copy.name == "checkpoint-6-x0.5"
    assert (copy / "adapter_model.safetensors").read_bytes() == (source / "adapter_model.safetensors").read_bytes()
    assert not (copy / "trainer_state.json").exists()
    meta = json.loads((copy / "behavio.json").read_text())
    assert meta["strength"] == 0.5 and meta["scaled_from"] == "checkpoint-6" and meta["step"] == 6 and meta["complete"]
    assert lines == ["strengths: checkpoint-6-x0.5 (checkpoint-6's update scaled; checked as candidates)"]

    def deltas(path: Path) -> dict[str, torch.Tensor]:
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(path))
        return {name: module.get_delta_weight("default") for name, module in model.named_modules()
                if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {})}

    full, half = deltas(source), deltas(copy)
    assert set(full) == set(half) and any("up_proj" in n for n in full)  # alpha_pattern's layers too
    for name in full:
        assert full[name].abs().max() > 0
        torch.testing.assert_close(half[name], 0.5 * full[name])


def test_a_copy_is_checked_never_resumed_and_replaced_by_the_next_runs_copies(tmp_path, lora_model):
    run = tmp_path / "run"
    _checkpoint(run, 4, lora_model)
    write_variants(run, complete_checkpoints(run)[-1], [0.8, 0.6])
    found = scan_checkpoints(run)
    assert [(c.name, c.step, c.strength, c.broken) for c in found] == [
        ("checkpoint-4", 4, 1.0, False), ("checkpoint-4-x0.6", 4, 0.6, False), ("checkpoint-4-x0.8", 4, 0.8, False)]
    assert [c.name for c in complete_checkpoints(run)] == ["checkpoint-4"] and newest_complete(run).name == "checkpoint-4"
    assert incomplete_checkpoints(run) == []  # a copy is not an interrupted save
    # a resumed run trained on: its last checkpoint's copies replace the old ones
    _checkpoint(run, 8, lora_model)
    write_variants(run, complete_checkpoints(run)[-1], [0.8])
    assert [c.name for c in scan_checkpoints(run)] == ["checkpoint-4", "checkpoint-8", "checkpoint-8-x0.8"]
    # a copy whose behavio.json was never written is incomplete, like any checkpoint
    (run / "checkpoint-8-x0.8" / "behavio.json").unlink()
    assert incomplete_checkpoints(run) == [run / "checkpoint-8-x0.8"]


def test_the_plan_reserves_the_check_of_each_copy():
    from behavio.train.budget import GenerationSpeed
    from behavio.train.config import TrainConfig
    from behavio.train.plan import CheckWork, make_plan

    def check(strengths):
        work = CheckWork([[1] * 40] * 100, 80, 32, answer_tokens=30)
        return make_plan(TrainConfig(save_steps=1000, strengths=strengths), budget=None, spent={}, sft_rows=64,
                         sft_done=0, dpo_pairs=None, on_policy_prompts=0, prompt_tokens=40, forward=0.5,
                         speed=GenerationSpeed(prompt_token=0.003, new_token=0.007), load_seconds=2.0, work=work,
                         eval_rows=0).check

    alone, with_two = check(()), check((1.0, 0.8, 0.6))
    assert alone.checkpoints == 1 and with_two.checkpoints == 3
    assert with_two.seconds > alone.seconds
