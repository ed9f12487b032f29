"""behavio: behavior specs compiled into chat datasets, check suites and LoRA/QLoRA training."""

__version__ = "0.1.0"
