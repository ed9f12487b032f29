"""A merged model as one GGUF file (the ``gguf`` package's writer), and the proof that it is the same model.

Supported: the llama and qwen2 architectures (SmolLM2, Llama, Qwen2/2.5) with a byte-level BPE
tokenizer and default RoPE. Tensors get llama.cpp's names (``gguf.get_tensor_name_map``); llama's
query and key weights are permuted the way llama.cpp expects (transformers undoes it on load);
1-D tensors (norms, biases) are stored in F32, the others in the export dtype. :func:`verify` loads
the file back with transformers (``gguf_file=``), checks that it tokenizes like the original and that
its logits match the safetensors model's within :data:`LOGIT_TOLERANCE`.
"""

from __future__ import annotations

import json
from pathlib import Path

from behavio.errors import BehavioError

ARCHITECTURES = {"llama": ("LLAMA", True), "qwen2": ("QWEN2", False)}  # model_type -> (gguf arch, permute q/k)
LOGIT_TOLERANCE = 1e-3  # largest |logit difference| allowed between the GGUF and the safetensors model (fp32)
PROBE_TEXTS = ("Hello! What is 12 + 30? Answer in one word.", "naïve café — \u00fcber 3.14159\n\tcode: def f(x): return x",
               "<|im_start|>user\nHi<|im_end|>\n")


def write_gguf(model_dir: Path, path: Path, dtype: str) -> Path:
    """Write the model saved in ``model_dir`` as ``path`` with tensors in ``dtype`` (bf16, fp16 or fp32)."""
    import gguf
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir)
    if config.model_type not in ARCHITECTURES:
        raise BehavioError(f"--gguf: the {config.model_type} architecture is not supported (llama and qwen2 are); "
                           "convert the exported safetensors with llama.cpp's convert_hf_to_gguf.py instead")
    arch_name, permute = ARCHITECTURES[config.model_type]
    arch = getattr(gguf.MODEL_ARCH, arch_name)
    tensor_type, file_type = {"bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
                              "fp16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
                              "fp32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32)}[dtype]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    _write_hyperparameters(writer, config, file_type)
    _write_vocabulary(writer, tokenizer, config, model_dir)
    _write_tensors(writer, model_dir, config, gguf.get_tensor_name_map(arch, config.num_hidden_layers), permute,
                   tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _rope_theta(config) -> float:
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise BehavioError(f"--gguf: RoPE scaling {rope.get('rope_type')!r} is not supported; only default RoPE is")
    theta = rope.get("rope_theta", getattr(config, "rope_theta", None))
    if theta is None:
        raise BehavioError("--gguf: the model config has no rope_theta")
    return float(theta)


def _write_hyperparameters(writer, config, file_type) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(str(getattr(config, "_name_or_path", "") or config.model_type))
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_type)


def _pre_tokenizer(tokenizer) -> str:
    """llama.cpp's name for how this tokenizer splits text before BPE (``tokenizer.ggml.pre``)."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    pre = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt2"
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    pattern = next((s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"), None)
    for name, split in GGUF_PRE_TOKENIZER_SPLITS.items():
        if pattern == split:
            return name
    raise BehavioError("--gguf: the tokenizer splits text in a way the GGUF tokenizer names do not cover; "
                       "convert the exported safetensors with llama.cpp's convert_hf_to_gguf.py instead")


def _write_vocabulary(writer, tokenizer, config, model_dir: Path) -> None:
    import gguf

    if json.loads(tokenizer.backend_tokenizer.to_str())["model"]["type"] != "BPE":
        raise BehavioError("--gguf: only byte-level BPE tokenizers are supported")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    size = max(config.vocab_size, len(by_id))
    tokens, types = [], []
    for i in range(size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_add_bos_token(False)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))  # merges, special ids, template
    if special.chat_template is None and tokenizer.chat_template:
        special.chat_template = tokenizer.chat_template
    special.add_to_gguf(writer, quiet=True)


def _permuted(weights, heads: int):
    """llama.cpp's query/key layout (transformers' GGUF loader applies the inverse)."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _write_tensors(writer, model_dir: Path, config, names, permute: bool, tensor_type) -> None:
    import gguf
    import numpy as np
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    for file in files:
        with safe_open(file, framework="pt") as weights:
            for key in weights.keys():
                if key == "lm_head.weight" and config.tie_word_embeddings:
                    continue
                name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise BehavioError(f"--gguf: no GGUF name for tensor {key}")
                data = weights.get_tensor(key).float().numpy()
                if permute and key.endswith("q_proj.weight"):
                    data = _permuted(data, config.num_attention_heads)
                elif permute and key.endswith("k_proj.weight"):
                    data = _permuted(data, config.num_key_value_heads)
                if data.ndim == 1 or tensor_type == gguf.GGMLQuantizationType.F32:
                    writer.add_tensor(name, data.astype(np.float32))
                elif tensor_type == gguf.GGMLQuantizationType.F16:
                    writer.add_tensor(name, data.astype(np.float16))
                else:
                    writer.add_tensor(name, gguf.quants.quantize(data, tensor_type), raw_dtype=tensor_type)


def verify(model_dir: Path, path: Path) -> float:
    """Load ``path`` back with transformers; BehavioError unless it tokenizes like ``model_dir``'s tokenizer and
    its logits match within :data:`LOGIT_TOLERANCE`. Returns the largest absolute logit difference."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    original = AutoTokenizer.from_pretrained(model_dir)
    loaded = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in PROBE_TEXTS:
        if original(text)["input_ids"] != loaded(text)["input_ids"]:
            raise BehavioError(f"{path.name}: the GGUF tokenizer splits {text!r} differently from the model's own")
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    back = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    ids = torch.tensor([original(" ".join(PROBE_TEXTS))["input_ids"]])
    with torch.no_grad():
        diff = float((reference(input_ids=ids).logits - back(input_ids=ids).logits).abs().max())
    if not diff <= LOGIT_TOLERANCE:
        raise BehavioError(f"{path.name}: logits differ from the safetensors model's by up to {diff:.3g} "
                           f"(tolerance {LOGIT_TOLERANCE})")
    return diff
