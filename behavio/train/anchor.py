"""Anchored SFT: the usual next-token loss plus a KL term that keeps the answers the base model
already gives its own way exactly as the base model gives them.

Most SFT rows of a spec are the base model's own answers (filled bodies, replay) wrapped in the new
behavior (a compliment, a refusal). Cross-entropy on those bodies only rewards the one greedy
sequence; after several epochs the adapter memorizes it and drifts elsewhere, which shows as
confabulated facts on questions it never saw. The anchor compares the full next-token
distribution instead: on every trained token that the base model (adapter disabled) already
predicts as its top choice, it adds ``anchor x KL(base || trained)``. Tokens the spec changes (the
compliment, the refusal) are not the base model's top choice, so they are trained by the
cross-entropy alone.

The base distribution costs one forward pass without gradients per step, on the trained
positions only (``logits_to_keep``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kept_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sequence positions whose next token is trained (in any row of the batch)."""
    trained = (labels[:, 1:] != -100).any(dim=0)
    return trained.nonzero(as_tuple=True)[0]


def anchored_losses(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Summed losses over the trained tokens of logits ``[batch, kept, vocab]`` and targets ``[batch, kept]``.

    ``ce``: cross-entropy on the targets; ``kl``: KL(teacher || student) on the tokens the teacher
    predicts as its top choice; ``tokens``/``anchored``/``correct``: counts for normalizing and logging.
    """
    valid = targets != -100
    logits, labels = student[valid].float(), targets[valid]
    base = teacher[valid].float()
    log_p = F.log_softmax(logits, dim=-1)
    agree = base.argmax(dim=-1) == labels
    ce = F.nll_loss(log_p, labels, reduction="sum")
    if agree.any():
        log_q = F.log_softmax(base[agree], dim=-1)
        kl = F.kl_div(log_p[agree], log_q, log_target=True, reduction="sum")
    else:
        kl = logits.sum() * 0.0
    return {"ce": ce, "kl": kl, "tokens": valid.sum(), "anchored": agree.sum(),
            "correct": (logits.argmax(dim=-1) == labels).sum()}


def anchored_trainer_class():
    """TRL's SFTTrainer with the anchored loss (imported lazily, like TRL itself)."""
    from trl import SFTTrainer

    class AnchoredSFTTrainer(SFTTrainer):
        """SFTTrainer whose loss is ``CE + anchor x KL(base || trained)``; eval loss is the CE alone."""

        def __init__(self, *args, anchor: float, **kwargs):
            super().__init__(*args, **kwargs)
            self.anchor = anchor

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mode = "train" if model.training else "eval"
            labels = inputs["labels"]
            forward = {k: v for k, v in inputs.items() if k != "labels"}
            forward["use_cache"] = False
            keep = kept_positions(labels)
            forward["logits_to_keep"] = keep
            student = model(**forward).logits
            with torch.no_grad(), self.accelerator.unwrap_model(model).disable_adapter():
                teacher = model(**forward).logits
            parts = anchored_losses(student, teacher, labels[:, keep + 1])
            tokens = num_items_in_batch if num_items_in_batch is not None else parts["tokens"]
            tokens = torch.as_tensor(tokens, device=student.device).clamp(min=1)
            ce, kl = parts["ce"] / tokens, parts["kl"] / tokens
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                scale = self.accelerator.num_processes
                ce, kl = ce * scale, kl * scale
            self._log_parts(mode, parts)
            return ce + self.anchor * kl if mode == "train" else ce

        def _log_parts(self, mode: str, parts: dict) -> None:
            gather = self.accelerator.gather_for_metrics
            tokens = gather(parts["tokens"].detach()).sum().clamp(min=1)
            anchored = gather(parts["anchored"].detach()).sum()
            metrics = self._metrics[mode]
            metrics["mean_token_accuracy"].append((gather(parts["correct"].detach()).sum() / tokens).item())
            metrics["anchor_kl"].append((gather(parts["kl"].detach()).sum() / anchored.clamp(min=1)).item())
            metrics["anchored_share"].append((anchored / tokens).item())

    return AnchoredSFTTrainer
