"""How a check conversation's system message reaches a model that behavio does not render for itself
(a served model, an Inspect provider): folded into the first user turn the way the model was trained.

Training folds it when the spec's ``train.fold_system`` is true, or, with ``auto``, when the
model's chat template rejects or drops the system role. So: the spec's setting when it is true or
false, else the template's need judged from the model's tokenizer when behavio finds the model
locally (as ``check --model`` does), else a system turn for the server's template to place. Control
markers in the text are neutralized either way, as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from behavio.chat import fold_system, prepare_messages
from behavio.control_tokens import neutralize


@dataclass
class Folding:
    """How check conversations are sent: ``fold`` (system into the first user turn) and why."""

    fold: bool
    reason: str
    tokenizer: object | None = None

    def messages(self, messages: list[dict]) -> list[dict]:
        """``messages`` as sent: control markers neutralized (as in training), the system folded if ``fold``."""
        if self.tokenizer is not None:
            return prepare_messages(messages, self.tokenizer, self.fold)
        clean = [{**m, "content": neutralize(m["content"])} if isinstance(m.get("content"), str) else dict(m)
                 for m in messages]
        return fold_system(clean) if self.fold else clean


def spec_fold_system(spec_path: str | Path) -> bool | None:
    """The spec's ``train.fold_system`` when it is true or false; None for ``auto``."""
    from behavio.spec.load import load_spec

    value = load_spec(spec_path).train.get("fold_system", "auto")
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value if isinstance(value, bool) else None


def resolve_folding(model: str, spec_fold: bool | None) -> Folding:
    """The spec's choice, else the chat template's need (from a local tokenizer), else no folding."""
    tokenizer = _local_tokenizer(model)
    if spec_fold is not None:
        return Folding(spec_fold, f"{'folded into the first user turn' if spec_fold else 'sent as a system turn'} "
                                  "(the spec's train.fold_system)", tokenizer)
    if tokenizer is not None:
        from behavio.chat import needs_system_fold

        fold = needs_system_fold(tokenizer)
        return Folding(fold, f"{'folded into the first user turn' if fold else 'sent as a system turn'} "
                             f"(as {model}'s chat template needs)", tokenizer)
    return Folding(False, f"sent as a system turn (no local tokenizer for {model!r} to tell whether its template "
                          "needs folding; set train.fold_system in the spec to force it)")


def _local_tokenizer(model: str):
    """The tokenizer of ``model`` when it is a local directory, ``default`` or in the HF cache; else None."""
    from behavio.models import load_tokenizer, resolve_base_model

    try:
        return load_tokenizer(resolve_base_model(model))
    except Exception:  # not a model behavio can find offline: the server alone knows its template
        return None
