"""The model being trained: device choice, (Q)LoRA setup, adapters loaded for further training.

``quantization: auto`` is QLoRA on CUDA (4-bit NF4, double quantization, bf16 compute,
``prepare_model_for_kbit_training``) and plain LoRA on CPU; ``4bit`` quantizes on CPU too.
``precision: auto`` trains in bf16 on CUDA and on CPUs with AMX bf16 units (the frozen base
weights in bf16, autocast, the LoRA weights in fp32), in fp32 on other CPUs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from behavio.errors import BehavioError
from behavio.models import is_quantized

if TYPE_CHECKING:
    from peft import PeftModel

    from behavio.train.config import TrainConfig


def use_cuda(cfg: TrainConfig) -> bool:
    """True when training runs on CUDA; BehavioError when CUDA is requested but absent."""
    import torch

    available = torch.cuda.is_available()
    if cfg.device == "cuda" and not available:
        raise BehavioError("device=cuda was requested but CUDA is not available (torch.cuda.is_available() is False); "
                           "use device=auto or device=cpu")
    return available and cfg.device != "cpu"


def gradient_checkpointing(cfg: TrainConfig, cuda: bool) -> bool:
    return cuda if cfg.gradient_checkpointing == "auto" else bool(cfg.gradient_checkpointing)


def cpu_has_amx() -> bool:
    """True when the CPU has AMX tiles, where oneDNN runs bf16 matmuls much faster than fp32."""
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, so guarded
    return bool(probe and probe())


def resolve_precision(cfg: TrainConfig, cuda: bool) -> str:
    """``bf16``, ``fp16`` or ``fp32``: what ``cfg.precision`` means on this machine."""
    import torch

    if cuda:
        if cfg.precision == "fp32":
            return "fp32"
        if torch.cuda.is_bf16_supported():
            return "bf16"
        if cfg.precision == "bf16":
            raise BehavioError("precision=bf16: this GPU does not support bf16; use precision=auto (fp16) or fp32")
        return "fp16"
    four_bit = cfg.quantization == "4bit"
    if cfg.precision == "bf16" and four_bit:
        raise BehavioError("precision=bf16 with quantization=4bit is not supported on CPU; use precision=fp32 or "
                           "quantization=none")
    if cfg.precision == "auto":
        return "bf16" if cpu_has_amx() and not four_bit else "fp32"
    return cfg.precision


def load_base(path: Path, cfg: TrainConfig, cuda: bool):
    """The base model ready for adapters: quantized and prepared for k-bit training when asked."""
    import torch
    from peft import prepare_model_for_kbit_training

    from behavio.models import load_model

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[resolve_precision(cfg, cuda)]
    model = load_model(path, quantization=cfg.quantization, dtype=dtype, trust_remote_code=cfg.trust_remote_code,
                       device="cuda" if cuda else "cpu")
    if is_quantized(model):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing(cfg, cuda))
    model.config.use_cache = False
    return model


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    target = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=target,
                      bias="none", task_type="CAUSAL_LM")


def new_adapter(model, cfg: TrainConfig) -> PeftModel:
    """A fresh LoRA adapter (``default``) on ``model``, initialized from ``cfg.seed``."""
    from peft import get_peft_model
    from transformers import set_seed

    set_seed(cfg.seed)
    try:
        return get_peft_model(model, lora_config(cfg))
    except ValueError as exc:  # e.g. target modules not found
        raise BehavioError(f"target_modules={cfg.target_modules!r}: {exc}") from None


def trained_adapter(model, adapter_dir: Path) -> PeftModel:
    """``model`` with the adapter saved in ``adapter_dir`` attached as ``default``, trainable."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    except Exception as exc:
        raise BehavioError(f"{adapter_dir}: adapter does not load ({type(exc).__name__}: {exc})") from None


def precision(cfg: TrainConfig, cuda: bool) -> dict:
    """Mixed-precision flags for the trainer (see :func:`resolve_precision`)."""
    resolved = resolve_precision(cfg, cuda)
    flags = {"bf16": resolved == "bf16", "fp16": resolved == "fp16"}
    return flags if cuda else {**flags, "use_cpu": True}
