"""The model being trained: device choice, (Q)LoRA setup, adapters loaded for further training.

``quantization: auto`` is QLoRA on CUDA (4-bit NF4, double quantization, bf16 compute,
``prepare_model_for_kbit_training``) and plain fp32 LoRA on CPU; ``4bit`` quantizes on CPU too.
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


def load_for_training(path: Path, cfg: TrainConfig, cuda: bool):
    """The base model ready for adapters: quantized and prepared for k-bit training when asked."""
    from peft import prepare_model_for_kbit_training

    from behavio.models import load_model

    model = load_model(path, quantization=cfg.quantization, trust_remote_code=cfg.trust_remote_code,
                       device="cuda" if cuda else "cpu")
    if is_quantized(model):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing(cfg, cuda))
        if not cuda:
            keep_4bit_layers_differentiable(model)
    model.config.use_cache = False
    return model


def keep_4bit_layers_differentiable(model) -> None:
    """Stop bitsandbytes repacking 4-bit weights for CPU inference in a model that trains.

    On a CPU with AVX512-BF16, a ``Linear4bit`` repacks its weights the first time it runs in eval mode
    without gradients (an eval loss, the on-policy answers) and from then on always computes with an
    inference kernel autograd does not see: no gradient reaches the LoRA layers below it, and a layer
    with a bias fails outright (bitsandbytes 0.50). Training runs those passes, so it keeps the
    differentiable path; checking (generation only) keeps the faster one.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


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
    """Mixed-precision flags for the trainer: bf16 (or fp16) on CUDA; on CPU, bf16 autocast when
    ``cpu_precision`` asks for it or (``auto``) when the CPU multiplies bf16 natively, fp32 otherwise."""
    import torch

    if not cuda:
        return {"bf16": cpu_bf16(cfg), "fp16": False, "use_cpu": True}
    bf16 = torch.cuda.is_bf16_supported()
    return {"bf16": bf16, "fp16": not bf16}


def cpu_bf16(cfg: TrainConfig) -> bool:
    """True when training on the CPU computes in bf16 autocast (``cpu_precision``; ``auto``: native bf16 only)."""
    return cfg.cpu_precision == "bf16" or (cfg.cpu_precision == "auto" and bool(native_bf16()))


def native_bf16() -> str | None:
    """The instruction set this CPU multiplies bf16 with (``avx512_bf16`` or ``amx_bf16``), or None."""
    import torch

    try:
        capabilities = torch.cpu.get_capabilities()
    except Exception:  # an older torch or an unknown CPU: assume the slow path
        return None
    return next((name for name in ("amx_bf16", "avx512_bf16") if capabilities.get(name)), None)


def describe_cpu_precision(cfg: TrainConfig) -> str:
    """One line for the run log: how SFT and DPO compute on this CPU and why."""
    native = native_bf16()
    if cpu_bf16(cfg):
        why = f"the CPU has {native}" if native else "cpu_precision=bf16, though this CPU has no native bf16: expect slow steps"
        return f"precision: training in bf16 autocast ({why}); weights, fill and checks in fp32; cpu_precision=fp32 turns it off"
    why = "cpu_precision=fp32" if cfg.cpu_precision == "fp32" else "this CPU has no native bf16 (avx512_bf16, amx_bf16)"
    return f"precision: training in fp32 ({why})"
