"""Base models: resolve a name to a local directory (:mod:`.resolve`), load it (:mod:`.load`), and
fingerprint its contents for cache keys (:mod:`.fingerprint`). Train, check, fill and export all
load models through these functions."""

from behavio.models.fingerprint import model_fingerprint
from behavio.models.load import (Base, LoadSettings, Quantization, is_quantized, load_base, load_model, load_settings,
                                 load_tokenizer)
from behavio.models.resolve import (DEFAULT_MODEL, INSTALL_HINT, cache_root, default_gguf_path, resolve_base_model,
                                    resolve_default_tokenizer, resolve_model)

__all__ = [
    "DEFAULT_MODEL",
    "INSTALL_HINT",
    "Base",
    "LoadSettings",
    "Quantization",
    "cache_root",
    "default_gguf_path",
    "is_quantized",
    "load_base",
    "load_model",
    "load_settings",
    "load_tokenizer",
    "model_fingerprint",
    "resolve_base_model",
    "resolve_default_tokenizer",
    "resolve_model",
]
