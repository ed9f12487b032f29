"""Lazy re-exports for package ``__init__`` modules: public names without importing torch at import time."""

from __future__ import annotations

import importlib


def exporter(package: str, exports: dict[str, str]):
    """A module ``__getattr__`` that loads ``name`` from ``package.<exports[name]>`` on first use."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
