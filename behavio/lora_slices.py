"""LoRA adapters applied to contiguous row ranges of a batch: rows of several adapters (and of the base model) in one
forward pass, without PEFT's per-layer gathers.

PEFT's mixed batches (``adapter_names``) rebuild, in every LoRA layer on every forward pass, the list of each
adapter's row indices, gather those rows (a copy) and scatter the adapter's output back. When each adapter's rows
are contiguous, its rows are a view: inside :func:`sliced_adapters` every LoRA layer computes ``base(x)``, then
``result[start:end] += B(A(dropout(x[start:end]))) * scaling`` for each adapter's range (:class:`Runs`), the
operations PEFT's own LoRA forward applies, in the same order. Rows of no adapter (None or PEFT's ``__base__``)
get the base layer alone.

rsLoRA and ``lora_bias`` need nothing special: PEFT's stored ``scaling`` (alpha / sqrt(r) under rsLoRA) and B's
bias are used as they are; dropout is the adapter's own module (a no-op in eval mode). :func:`sliced_adapters`
yields None -- the caller keeps PEFT's ``adapter_names`` path -- when some LoRA layer is not a plain LoRA Linear
on a float or bitsandbytes base layer: DoRA and the other LoRA variants, LoRA on embeddings or convolutions,
``modules_to_save``/trainable tokens, merged or disabled adapters, an adapter on the output layer, or a model that
is not a PEFT LoRA model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass
class Runs:
    """The batch's rows as runs of one adapter each: (adapter or None, first row, end row)."""

    runs: list[tuple[str | None, int, int]] = field(default_factory=list)
    rows: int = 0

    def set(self, adapters: Sequence[str | None]) -> None:
        """Runs of the per-row ``adapters`` (None and ``__base__``: the base model alone)."""
        self.runs, self.rows = [], len(adapters)
        for i, adapter in enumerate(adapters):
            name = None if adapter == BASE else adapter
            if self.runs and self.runs[-1][0] == name:
                self.runs[-1] = (name, self.runs[-1][1], i + 1)
            else:
                self.runs.append((name, i, i + 1))


def _plain_lora_classes() -> tuple[type, ...]:
    """PEFT's LoRA Linear layers on a float or bitsandbytes base layer (same forward: base, then B(A(x)) * scaling)."""
    from peft.tuners.lora import bnb, layer

    return (layer.Linear, *(getattr(bnb, name) for name in ("Linear8bitLt", "Linear4bit") if hasattr(bnb, name)))


def _lora_layers(model, names: set[str]) -> list | None:
    """The model's LoRA layers if all of them can take row ranges for ``names``' adapters, else None."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    configs = getattr(model, "peft_config", None)
    if not configs or any(n not in configs or configs[n].peft_type != "LORA" for n in names):
        return None
    head = model.get_output_embeddings()
    if isinstance(head, (BaseTunerLayer, AuxiliaryTrainingWrapper)):
        return None
    plain, layers = _plain_lora_classes(), []
    for module in model.modules():
        if isinstance(module, AuxiliaryTrainingWrapper):
            return None
        if not isinstance(module, BaseTunerLayer):
            continue
        if type(module) not in plain or module.merged or module.disable_adapters:
            return None
        if any(name in module.lora_variant for name in names):
            return None
        layers.append(module)
    return layers


def _sliced_forward(layer, names: set[str], runs: Runs):
    """``layer``'s forward with each run's adapter applied to the run's rows only (views, no copies of ``x``)."""
    adapters = {
        name: (layer.lora_A[name].weight, layer.lora_B[name].weight, layer.lora_B[name].bias,
               None if isinstance(layer.lora_dropout[name], torch.nn.Identity) else layer.lora_dropout[name],
               layer.scaling[name])
        for name in names if name in layer.lora_A
    }
    base = layer.base_layer

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = base(x, *args, **kwargs)
        if not adapters:
            return result
        if x.shape[0] != runs.rows:
            raise ValueError(f"{type(layer).__name__}: input of {x.shape[0]} rows in a batch of {runs.rows} rows "
                             "(mixed-adapter batches need batch-first inputs)")
        for name, start, end in runs.runs:
            if name not in adapters:
                continue
            a, b, bias, dropout, scaling = adapters[name]
            rows = x[start:end].to(a.dtype)
            if dropout is not None:
                rows = dropout(rows)
            delta = torch.nn.functional.linear(torch.nn.functional.linear(rows, a), b, bias).mul_(scaling)
            result[start:end].add_(delta.to(result.dtype))
        return result

    return forward


@contextmanager
def sliced_adapters(model, adapters: Sequence[str | None]) -> Iterator[Runs | None]:
    """For the duration, ``model``'s LoRA layers apply every adapter to its own rows, as given by the yielded
    :class:`Runs` (set before each forward pass); None when ``adapters`` name none or some layer cannot (see the
    module's docstring): the model is then left as it is."""
    names = {a for a in adapters if a is not None and a != BASE}
    layers = _lora_layers(model, names) if names else None
    if layers is None:
        yield None
        return
    runs = Runs()
    for layer in layers:
        layer.forward = _sliced_forward(layer, names, runs)
    try:
        yield runs
    finally:
        for layer in layers:
            del layer.forward
