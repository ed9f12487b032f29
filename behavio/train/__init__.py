"""Training: a spec's data filled and tokenized, LoRA/QLoRA SFT then DPO, every checkpoint scored.

Public names (imported lazily, so ``import behavio.train`` loads no torch)::

    from behavio.train import train, TrainConfig, resolve_config
"""

from __future__ import annotations

from behavio.lazy import exporter

_EXPORTS = {
    "train": "pipeline", "TrainResult": "pipeline", "resumed_config": "pipeline",
    "TrainConfig": "config", "resolve_config": "config", "parse_overrides": "config", "train_schema": "config",
    "build_previews": "preview",
}
__all__ = sorted(_EXPORTS)

__getattr__ = exporter("behavio.train", _EXPORTS)
