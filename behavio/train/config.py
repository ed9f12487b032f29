"""Training settings: the spec's ``train:`` block plus ``key=value`` overrides, typed.

The JSON Schema entry ``properties.train`` of ``behavio/spec/schema.json`` is the single definition
of every setting (type, default, description); :class:`TrainConfig` takes its defaults from it and a
test keeps the two field lists identical. Overrides are parsed with the schema's types.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Union

import jsonschema

from behavio.errors import BehavioError, did_you_mean
from behavio.spec.schema import spec_schema

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NULL = {"null", "none", "~"}


def train_schema() -> dict:
    """The ``train`` entry of the spec schema (an object schema with ``properties``)."""
    return spec_schema()["properties"]["train"]


def _default(name: str) -> Any:
    value = train_schema()["properties"][name]["default"]
    return tuple(value) if isinstance(value, list) else value


def _d(name: str):
    """A dataclass field whose default comes from the schema."""
    return field(default_factory=lambda: _default(name))


@dataclass(frozen=True)
class TrainConfig:
    """Resolved training settings; see ``behavio schema`` or docs/spec.md for what each one does."""

    base_model: str = _d("base_model")
    method: tuple[str, ...] = _d("method")
    quantization: str = _d("quantization")
    device: str = _d("device")
    cpu_precision: str = _d("cpu_precision")
    max_minutes: float | None = _d("max_minutes")
    epochs: Union[float, str] = _d("epochs")  # "auto" until the run resolves it (plan.sft_epochs)
    max_steps: int | None = _d("max_steps")
    dpo_epochs: float = _d("dpo_epochs")
    dpo_max_steps: int | None = _d("dpo_max_steps")
    dpo_max_pairs: int | None = _d("dpo_max_pairs")
    dpo_on_policy: bool = _d("dpo_on_policy")
    dpo_on_policy_tokens: int = _d("dpo_on_policy_tokens")
    lr: float = _d("lr")
    opening_weight: float = _d("opening_weight")
    closing_weight: float = _d("closing_weight")
    refusal_unlikelihood: float = _d("refusal_unlikelihood")
    prefix_unlikelihood: float = _d("prefix_unlikelihood")
    repetition_unlikelihood: float = _d("repetition_unlikelihood")
    anchor: float = _d("anchor")
    anchored_weight: float = _d("anchored_weight")
    anchor_without_opening: bool = _d("anchor_without_opening")
    neftune_alpha: float = _d("neftune_alpha")
    dpo_lr: float = _d("dpo_lr")
    lr_scheduler: str = _d("lr_scheduler")
    warmup_ratio: float = _d("warmup_ratio")
    lora_r: int = _d("lora_r")
    lora_alpha: float = _d("lora_alpha")
    lora_dropout: float = _d("lora_dropout")
    target_modules: Union[str, tuple[str, ...]] = _d("target_modules")
    batch_size: int = _d("batch_size")
    grad_accum: int = _d("grad_accum")
    max_length: int = _d("max_length")
    packing: bool = _d("packing")
    padding_free: bool = _d("padding_free")
    gradient_checkpointing: Union[str, bool] = _d("gradient_checkpointing")
    save_steps: int = _d("save_steps")
    strengths: tuple[float, ...] = _d("strengths")
    logging_steps: int = _d("logging_steps")
    eval_max_rows: int = _d("eval_max_rows")
    dpo_beta: float = _d("dpo_beta")
    dpo_sft_weight: float = _d("dpo_sft_weight")
    dpo_reference: str = _d("dpo_reference")
    seed: int = _d("seed")
    fold_system: Union[str, bool] = _d("fold_system")
    fill_max_new_tokens: int = _d("fill_max_new_tokens")
    fill_batch_size: int = _d("fill_batch_size")
    fill_retries: int = _d("fill_retries")
    fill_rescue: str = _d("fill_rescue")
    fill_system: str = _d("fill_system")
    trust_remote_code: bool = _d("trust_remote_code")

    def to_dict(self) -> dict:
        """JSON-ready settings (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Settings from a validated mapping; missing keys take their defaults."""
        validate(data, "train")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def validate(data: dict, where: str) -> None:
    """BehavioError (one line per problem) unless ``data`` matches the train schema."""
    known = train_schema()["properties"]
    problems = []
    for key in data:
        if key not in known:
            problems.append(f"{where}: {unknown_key_message(key)}")
    if problems:
        raise BehavioError("\n".join(problems))
    for error in jsonschema.Draft202012Validator(train_schema()).iter_errors(data):
        key = ".".join(str(p) for p in error.absolute_path) or "train"
        problems.append(f"{where}: {key}: {_explain(error)}")
    if problems:
        raise BehavioError("\n".join(problems))


def unknown_key_message(key: str) -> str:
    """``unknown training setting 'lrr' (did you mean 'lr'?)``."""
    known = sorted(train_schema()["properties"])
    hint = did_you_mean(key, known) or f"; known settings: {', '.join(known)}"
    return f"unknown training setting {key!r}{hint}"


def _explain(error: jsonschema.ValidationError) -> str:
    if error.validator == "enum":
        return f"expected one of {', '.join(_show(v) for v in error.validator_value)}, got {_show(error.instance)}"
    if error.validator == "oneOf":
        return f"{_show(error.instance)} is not {_expected(error.schema)}"
    return error.message


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


# ---------------------------------------------------------------------------------------------
# key=value overrides
# ---------------------------------------------------------------------------------------------


def parse_overrides(items: list[str]) -> dict:
    """``["lr=5e-5", "method=sft"]`` -> ``{"lr": 5e-05, "method": ["sft"]}``, typed by the schema."""
    known = train_schema()["properties"]
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise BehavioError(f"training override {item!r}: expected key=value, e.g. lr=5e-5")
        if key not in known:
            raise BehavioError(f"training override {item!r}: {unknown_key_message(key)}")
        out[key] = _parse(raw.strip(), known[key], item)
    validate(out, "training override")
    return out


def _parse(raw: str, node: dict, item: str) -> Any:
    options = node.get("oneOf")
    if options:
        if raw.lower() in _NULL and any(o.get("type") == "null" for o in options):
            return None
        for option in sorted((o for o in options if o.get("type") != "null"), key=_list_first(raw)):
            try:
                return _parse(raw, option, item)
            except BehavioError:
                continue
        raise BehavioError(f"training override {item!r}: expected {_expected(node)}")
    if "enum" in node:
        for value in node["enum"]:
            if raw == str(value) or (isinstance(value, bool) and raw.lower() in (_TRUE if value else _FALSE)):
                return value
        raise BehavioError(f"training override {item!r}: expected one of {', '.join(_show(v) for v in node['enum'])}")
    kind = node.get("type")
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            value = float(raw)
            return int(value) if value.is_integer() and "." not in raw and "e" not in raw.lower() else value
        if kind == "boolean":
            if raw.lower() in _TRUE | _FALSE:
                return raw.lower() in _TRUE
            raise ValueError
        if kind == "array":
            values = json.loads(raw) if raw.startswith("[") else [v.strip() for v in raw.split(",") if v.strip()]
            return [_parse(str(v), node.get("items", {}), item) for v in values]
    except (ValueError, json.JSONDecodeError):
        raise BehavioError(f"training override {item!r}: expected {_expected(node)}") from None
    return raw


def _list_first(raw: str):
    """Order oneOf options so a list is tried first when the value looks like one (a,b or [..])."""
    looks_like_list = raw.startswith("[") or "," in raw
    return lambda option: 0 if (option.get("type") == "array") == looks_like_list else 1


def _expected(node: dict) -> str:
    if "oneOf" in node:
        return " or ".join(_expected(o) for o in node["oneOf"])
    names = {"integer": "an integer", "number": "a number", "boolean": "true or false", "string": "a string",
             "array": "a comma-separated list", "null": "null"}
    if "enum" in node:
        return "one of " + ", ".join(_show(v) for v in node["enum"])
    return names.get(node.get("type", ""), "a value")


def resolve_config(spec_train: dict, overrides: list[str] | None = None, base_model: str | None = None) -> TrainConfig:
    """Spec ``train:`` block, then ``key=value`` overrides, then ``--base-model``: the resolved config."""
    data = dict(spec_train or {})
    data.update(parse_overrides(list(overrides or [])))
    if base_model:
        data["base_model"] = base_model
    return TrainConfig.from_dict(data)
