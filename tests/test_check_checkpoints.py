"""Checkpoint discovery and validation, on hand-made files (no model needed)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from behavio.rundir import (check_safetensors, content_hash, find_checkpoints, inspect_checkpoint,
                                       run_base_model)
from behavio.errors import BehavioError


def make_checkpoint(run, step: int, *, meta: dict | None = None) -> object:
    d = run / f"checkpoint-{step}"
    d.mkdir(parents=True)
    save_file({"base_model.model.layer.lora_A.weight": torch.ones(2, 4)}, str(d / "adapter_model.safetensors"))
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    (d / "behavio.json").write_text(json.dumps(meta if meta is not None else
                                               {"spec_hash": "x", "step": step, "stage": "sft", "metrics": {}, "complete": True}))
    return d


def test_sound_checkpoints_in_step_order(tmp_path):
    for step in (100, 20, 3):
        make_checkpoint(tmp_path, step)
    (tmp_path / "not-a-checkpoint").mkdir()
    found = find_checkpoints(tmp_path)
    assert [c.step for c in found] == [3, 20, 100]
    assert not any(c.broken for c in found) and found[0].stage == "sft"


def test_truncated_safetensors_is_broken_and_named(tmp_path):
    d = make_checkpoint(tmp_path, 1)
    weights = d / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    ckpt = inspect_checkpoint(d)
    assert ckpt.broken and "adapter_model.safetensors" in ckpt.problem and "truncated" in ckpt.problem


@pytest.mark.parametrize("damage, file, words", [
    (lambda d: (d / "adapter_config.json").unlink(), "adapter_config.json", "missing"),
    (lambda d: (d / "adapter_config.json").write_text(""), "adapter_config.json", "empty"),
    (lambda d: (d / "adapter_config.json").write_text("{oops"), "adapter_config.json", "not valid JSON"),
    (lambda d: (d / "adapter_model.safetensors").write_bytes(b""), "adapter_model.safetensors", "empty"),
    (lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x05\x00"), "adapter_model.safetensors", "truncated"),
    (lambda d: (d / "behavio.json").write_text(json.dumps({"step": 1})), "behavio.json", "not complete"),
    (lambda d: (d / "behavio.json").unlink(), "behavio.json", "missing"),
])
def test_broken_checkpoints_name_the_file(tmp_path, damage, file, words):
    d = make_checkpoint(tmp_path, 7)
    damage(d)
    ckpt = inspect_checkpoint(d)
    assert ckpt.broken and file in ckpt.problem and words in ckpt.problem


def test_pickled_weights_are_never_used(tmp_path):
    d = make_checkpoint(tmp_path, 1)
    (d / "adapter_model.safetensors").rename(d / "adapter_model.bin")
    problem = inspect_checkpoint(d).problem
    assert "adapter_model.safetensors: missing" in problem and "only safetensors" in problem


def test_one_broken_checkpoint_leaves_the_others(tmp_path):
    make_checkpoint(tmp_path, 1)
    (make_checkpoint(tmp_path, 2) / "adapter_config.json").unlink()
    found = find_checkpoints(tmp_path)
    assert [c.broken for c in found] == [False, True]


def test_missing_or_empty_run_dir(tmp_path):
    with pytest.raises(BehavioError, match="run directory not found"):
        find_checkpoints(tmp_path / "nope")
    with pytest.raises(BehavioError, match="no checkpoint-<step>"):
        find_checkpoints(tmp_path)


def test_content_hash_changes_with_the_weights(tmp_path):
    a, b = make_checkpoint(tmp_path, 1), make_checkpoint(tmp_path, 2)
    assert content_hash(a) == content_hash(b)
    save_file({"w": torch.zeros(2, 4)}, str(b / "adapter_model.safetensors"))
    assert content_hash(a) != content_hash(b)
    check_safetensors(b / "adapter_model.safetensors")


def test_run_base_model_from_config_or_checkpoint(tmp_path):
    make_checkpoint(tmp_path, 1, meta={"complete": True, "step": 1, "base_model": "/models/b"})
    found = find_checkpoints(tmp_path)
    assert run_base_model(tmp_path, found) == "/models/b"
    (tmp_path / "config.json").write_text(json.dumps({"base_model": "/models/a"}))
    assert run_base_model(tmp_path, found) == "/models/a"


def test_checks_fold_the_system_message_as_the_run_trained(tmp_path):
    import json

    from behavio.rundir import run_fold_system

    assert run_fold_system(tmp_path) == "auto"
    for stored, expected in ((True, True), (False, False), ("auto", "auto"), ("true", True)):
        (tmp_path / "config.json").write_text(json.dumps({"fold_system": stored}))
        assert run_fold_system(tmp_path) == expected
