"""Load a resolved model directory: tokenizer, weights (fp32, half, or 4-bit NF4), and the loaded base
model generation works with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from behavio.errors import BehavioError
from behavio.models.fingerprint import model_fingerprint

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Quantization = Literal["auto", "4bit", "none"]


def load_tokenizer(path: Path | str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer saved in ``path``, with a pad token (eos when the model defines none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise BehavioError(f"tokenizer in {path} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def is_quantized(model) -> bool:
    """Whether ``model`` was loaded with bitsandbytes 4-bit or 8-bit weights."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


@dataclass(frozen=True)
class LoadSettings:
    """How a model is loaded, resolved for this machine: part of every generation cache key."""

    device: str        # "cpu" or "cuda"
    dtype: str         # "float32", "bfloat16" or "float16"
    quantization: str  # "none" or "4bit"

    def as_dict(self) -> dict:
        return {"device": self.device, "dtype": self.dtype, "quantization": self.quantization}


def load_settings(quantization: Quantization = "auto", device: str = "auto",
                  dtype: torch.dtype | str | None = None) -> LoadSettings:
    """What ``auto`` means here: 4-bit NF4 and bf16 (fp16 without bf16 support) on CUDA, fp32 and no
    quantization on CPU; BehavioError for unknown values or CUDA requested without CUDA."""
    import torch

    if quantization not in ("auto", "4bit", "none"):
        raise BehavioError(f"quantization {quantization!r}: expected one of auto, 4bit, none")
    if device not in ("auto", "cpu", "cuda"):
        raise BehavioError(f"device {device!r}: expected one of auto, cpu, cuda")
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise BehavioError("device 'cuda' was requested but CUDA is not available (torch.cuda.is_available() is False)")
    on_cuda = cuda and device != "cpu"
    half = torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float16
    chosen = _as_dtype(dtype) if dtype is not None else (half if on_cuda else torch.float32)
    four_bit = quantization == "4bit" or (quantization == "auto" and on_cuda)
    return LoadSettings("cuda" if on_cuda else "cpu", str(chosen).removeprefix("torch."), "4bit" if four_bit else "none")


def load_model(
    path: Path | str,
    *,
    quantization: Quantization = "auto",
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    device: Literal["auto", "cpu", "cuda"] = "auto",
) -> PreTrainedModel:
    """Load safetensors weights from ``path`` for training or generation (settings: :func:`load_settings`).

    ``quantization``: ``auto`` is 4-bit NF4 on CUDA and none on CPU; ``4bit`` also works on CPU
    (bitsandbytes >= 0.50 quantizes there). ``dtype`` defaults to bf16/fp16 on CUDA, fp32 on CPU.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    settings = load_settings(quantization, device, dtype)
    on_cuda = settings.device == "cuda"
    if not any(path.glob("*.safetensors")):
        raise BehavioError(f"{path} holds no *.safetensors weights (behavio never loads pickled .bin weights)")

    dtype = _as_dtype(settings.dtype)
    kwargs: dict = {"dtype": dtype, "use_safetensors": True, "trust_remote_code": trust_remote_code}
    if on_cuda:
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    if settings.quantization == "4bit":
        kwargs["quantization_config"] = _nf4_config(dtype if on_cuda else torch.float32)
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (ImportError, RuntimeError, NotImplementedError) as exc:
        if "quantization_config" not in kwargs or on_cuda:
            raise
        raise BehavioError(
            f"4-bit quantization on CPU failed ({type(exc).__name__}: {exc}); it needs bitsandbytes>=0.50 -- "
            "upgrade it or use quantization='none'"
        ) from exc


@dataclass
class Base:
    """A loaded base model with its tokenizer and fingerprint."""

    path: Path
    model: object
    tokenizer: object
    fingerprint: str


def load_base(path: Path, *, quantization: Quantization = "auto", trust_remote_code: bool = False,
              device: str = "auto") -> Base:
    """The base model at ``path`` in eval mode, with its tokenizer and fingerprint (for generation)."""
    model = load_model(path, quantization=quantization, trust_remote_code=trust_remote_code, device=device)
    model.eval()
    return Base(path, model, load_tokenizer(path, trust_remote_code=trust_remote_code), model_fingerprint(path))


def _nf4_config(compute_dtype: torch.dtype):
    """QLoRA's 4-bit NF4 with double quantization."""
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise BehavioError("4-bit quantization needs bitsandbytes; install it with: pip install bitsandbytes") from None
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise BehavioError(f"dtype {dtype!r}: expected one of {', '.join(names)}")
    return names[dtype]
