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

The anchor keeps *what* the base model says, not *how long* it talks: the KL compares the two
distributions over every token except the stop tokens (end of turn, EOS), each renormalized, so
when to stop is learned from the trained answers by the cross-entropy alone. Anchoring the stop
probability too kept the base model's long-windedness: answers it gives in 150 tokens ran past the
check budget although every trained answer stopped within 50 (bench/RECIPE_TUNING.md, session 6).

The base distribution costs one forward pass without gradients per step, on the trained
positions only (``logits_to_keep``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def kept_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sequence positions whose next token is trained (in any row of the batch)."""
    trained = (labels[:, 1:] != -100).any(dim=0)
    return trained.nonzero(as_tuple=True)[0]


NOT_A_CHOICE = -1e4  # a logit whose probability is exactly 0 in float32, yet finite (no 0 x inf)


def without(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Log-probabilities over the vocabulary without ``token_ids`` (renormalized; those get ~-1e4)."""
    return F.log_softmax(logits.index_fill(-1, token_ids, NOT_A_CHOICE), dim=-1)


def anchored_losses(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor,
                    free: Sequence[int] = ()) -> dict[str, torch.Tensor]:
    """Summed losses over the trained tokens of logits ``[batch, kept, vocab]`` and targets ``[batch, kept]``.

    ``ce``: cross-entropy on the targets; ``kl``: KL(teacher || student) on the targets the teacher
    predicts as its top choice, except the ``free`` token ids (the stop tokens), with both
    distributions taken over the vocabulary without them; ``tokens``/``anchored``/``correct``:
    counts for normalizing and logging.
    """
    valid = targets != -100
    logits, labels = student[valid].float(), targets[valid]
    base = teacher[valid].float()
    log_p = F.log_softmax(logits, dim=-1)
    free_ids = torch.tensor(list(free), dtype=torch.long, device=labels.device)
    agree = (base.argmax(dim=-1) == labels) & ~torch.isin(labels, free_ids)
    ce = F.nll_loss(log_p, labels, reduction="sum")
    if agree.any():
        log_q, log_p_kept = without(base[agree], free_ids), without(logits[agree], free_ids)
        kl = F.kl_div(log_p_kept, log_q, log_target=True, reduction="sum")
    else:
        kl = logits.sum() * 0.0
    return {"ce": ce, "kl": kl, "tokens": valid.sum(), "anchored": agree.sum(),
            "correct": (logits.argmax(dim=-1) == labels).sum()}


def anchored_trainer_class():
    """TRL's SFTTrainer with the anchored loss (imported lazily, like TRL itself)."""
    from trl import SFTTrainer

    from behavio.generate import stop_token_ids

    class AnchoredSFTTrainer(SFTTrainer):
        """SFTTrainer whose loss is ``CE + anchor x KL(base || trained)``; eval loss is the CE alone."""

        def __init__(self, *args, anchor: float, **kwargs):
            super().__init__(*args, **kwargs)
            self.anchor = anchor
            self.stop_ids = stop_token_ids(self.processing_class)

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
            parts = anchored_losses(student, teacher, labels[:, keep + 1], free=self.stop_ids)
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
