"""Training settings: one definition in the schema, typed overrides, clear errors (no model needed)."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from behavio.cli import app
from behavio.errors import BehavioError, SpecError
from behavio.train.config import TrainConfig, parse_overrides, resolve_config, train_schema


def test_config_fields_and_defaults_are_the_schema_entry():
    schema = train_schema()
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    props = schema["properties"]
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert list(fields) == list(props)
    defaults = TrainConfig().to_dict()
    for name, node in props.items():
        assert "default" in node and node.get("description"), name
        assert defaults[name] == node["default"], name


def test_overrides_are_parsed_with_the_schema_types():
    parsed = parse_overrides(["lr=5e-5", "batch_size=2", "packing=true", "method=sft", "max_minutes=none",
                              "target_modules=q_proj,v_proj", "fold_system=false", "gradient_checkpointing=auto",
                              "lora_alpha=16", "dpo_max_pairs=null", "epochs=0.5"])
    assert parsed == {"lr": 5e-05, "batch_size": 2, "packing": True, "method": ["sft"], "max_minutes": None,
                      "target_modules": ["q_proj", "v_proj"], "fold_system": False, "gradient_checkpointing": "auto",
                      "lora_alpha": 16, "dpo_max_pairs": None, "epochs": 0.5}
    assert parse_overrides(["target_modules=all-linear"]) == {"target_modules": "all-linear"}
    assert parse_overrides(["epochs=auto"]) == {"epochs": "auto"} and TrainConfig().epochs == "auto"
    with pytest.raises(BehavioError, match="epochs=often.*expected a number or one of auto"):
        parse_overrides(["epochs=often"])


def test_override_order_spec_then_key_value_then_base_model_flag():
    cfg = resolve_config({"lr": 1e-4, "base_model": "spec-model", "max_minutes": 10}, ["lr=3e-4"], base_model="flag-model")
    assert (cfg.lr, cfg.base_model, cfg.max_minutes) == (3e-4, "flag-model", 10)
    assert cfg.method == ("sft",)  # the default recipe: SFT only (DPO with method=sft,dpo)


@pytest.mark.parametrize("item, message", [
    ("lrr=1", "unknown training setting 'lrr' (did you mean 'lr'?)"),
    ("dpo_betta=0.2", "did you mean 'dpo_beta'?"),
    ("lr=fast", "expected a number"),
    ("batch_size=2.5", "expected an integer"),
    ("packing=maybe", "expected true or false"),
    ("quantization=8bit", "expected one of auto, 4bit, none"),
    ("method=sft,ppo", "expected one of sft, dpo"),
    ("batch_size=0", "batch_size: 0 is less than the minimum of 1"),
    ("noequals", "expected key=value"),
])
def test_bad_overrides_are_one_line_errors(item, message):
    with pytest.raises(BehavioError) as info:
        parse_overrides([item])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_key_in_spec_train_block_is_a_located_spec_error(tmp_path, train_spec):
    path = train_spec(learning_rate=1e-4)
    from behavio.spec.load import load_spec

    with pytest.raises(SpecError) as info:
        load_spec(path)
    text = str(info.value)
    assert "train.learning_rate" in text and "unknown key 'learning_rate'" in text and ":" in text.split()[0]


def test_cli_rejects_unknown_override_with_exit_2(train_spec):
    result = CliRunner().invoke(app, ["train", str(train_spec()), "max_stepz=3"])
    assert result.exit_code == 2
    assert "did you mean 'max_steps'?" in result.output


def test_resume_may_only_change_max_minutes(tmp_path):
    import json

    from behavio.train.pipeline import resumed_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**TrainConfig().to_dict(), "base_model": "/models/x",
                                                 "base_model_name": "default"}))
    assert resumed_config(run, ["max_minutes=30"], None).max_minutes == 30
    with pytest.raises(BehavioError, match="lr cannot change in a started run"):
        resumed_config(run, ["lr=1"], None)
