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

Cost: the base model and its inputs are fixed, so its answer is computed once, before training:
one pass over the training data without the adapter keeps the base model's last hidden state at
every trained position (:class:`Teacher`). Each step turns those into the base distribution with
the output head, a matmul over the trained positions only, instead of running the base model
again. The losses are computed over the trained positions in chunks of at most
``CHUNK_ELEMENTS`` logits (recomputed in the backward pass when there is more than one chunk), so
memory stays bounded whatever the vocabulary and the number of trained tokens.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

CHUNK_ELEMENTS = 2**25  # logits (positions x vocabulary) per chunk: 128 MB in float32


def kept_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sequence positions whose next token is trained (in any row of the batch)."""
    trained = (labels[:, 1:] != -100).any(dim=0)
    return trained.nonzero(as_tuple=True)[0]


NOT_A_CHOICE = -1e4  # a logit whose probability is exactly 0 in float32, yet finite (no 0 x inf)


def without(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Log-probabilities over the vocabulary without ``token_ids`` (renormalized; those get ~-1e4)."""
    return F.log_softmax(logits.index_fill(-1, token_ids, NOT_A_CHOICE), dim=-1)


def losses(student: torch.Tensor, targets: torch.Tensor, anchored: torch.Tensor | None = None,
           teacher: torch.Tensor | None = None, free: Sequence[int] = (),
           weights: torch.Tensor | None = None, avoid: torch.Tensor | None = None,
           avoid_ids: Sequence[torch.Tensor] | None = None,
           repeats: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Summed losses over logits ``[n, vocab]`` and targets ``[n]``.

    ``ce``: cross-entropy on the targets, each weighted by ``weights`` (``[n]``; none: 1); ``kl``:
    KL(teacher || student) on the rows ``anchored`` (a mask ``[n]``) whose teacher logits are ``teacher``
    (``[anchored.sum(), vocab]``), both distributions taken over the vocabulary without the ``free`` token ids
    (the stop tokens); ``unlikely``: for each group of token ids in ``avoid_ids``, ``-log(1 - p)`` with ``p`` the
    probability of any of them, weighted by that group's column of ``avoid`` (``[n, groups]``; 0: the row does not
    avoid the group) and summed (unlikelihood: pushes those tokens down where they are wrong); ``repeat``: for each
    id of ``repeats`` (``[n, k]``, -1: none; :func:`repeated_tokens`), ``-log(1 - p)`` of that token, summed;
    ``tokens``/``anchored``/``correct``: counts for normalizing and logging.
    """
    logits = student.float()
    log_probs = F.log_softmax(logits, dim=-1)
    nll = F.nll_loss(log_probs, targets, reduction="none")
    ce = (nll * weights).sum() if weights is not None else nll.sum()
    correct = (logits.argmax(dim=-1) == targets).sum()
    anchored = anchored if anchored is not None else torch.zeros_like(targets, dtype=torch.bool)
    if teacher is not None and anchored.any():
        free_ids = torch.tensor(list(free), dtype=torch.long, device=targets.device)
        log_q, log_p = without(teacher.float(), free_ids), without(logits[anchored], free_ids)
        kl = F.kl_div(log_p, log_q, log_target=True, reduction="sum")
    else:
        kl = logits.sum() * 0.0
    unlikely = logits.sum() * 0.0
    if avoid is not None and avoid_ids is not None and avoid.any():
        rows = avoid.sum(dim=-1) > 0
        probs = F.softmax(logits[rows], dim=-1)
        for g, ids in enumerate(avoid_ids):
            p = probs[:, ids].sum(dim=-1)
            unlikely = unlikely - (avoid[rows, g] * torch.log1p(-p.clamp(max=1 - 1e-6))).sum()
    repeat = logits.sum() * 0.0
    if repeats is not None and (repeats >= 0).any():
        p = log_probs.gather(1, repeats.clamp(min=0)).exp()
        repeat = -(torch.log1p(-p.clamp(max=1 - 1e-6)) * (repeats >= 0)).sum()
    return {"ce": ce, "kl": kl, "unlikely": unlikely, "repeat": repeat,
            "tokens": torch.tensor(targets.shape[0], device=targets.device),
            "anchored": anchored.sum(), "correct": correct}


def agreement(teacher: torch.Tensor, targets: torch.Tensor, free: Sequence[int] = ()) -> torch.Tensor:
    """The rows to anchor: the teacher's top choice is the target, and the target is not a stop token."""
    free_ids = torch.tensor(list(free), dtype=torch.long, device=targets.device)
    return (teacher.argmax(dim=-1) == targets) & ~torch.isin(targets, free_ids)


def anchored_losses(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor,
                    free: Sequence[int] = ()) -> dict[str, torch.Tensor]:
    """:func:`losses` over the trained tokens of logits ``[batch, kept, vocab]`` and targets ``[batch, kept]``
    (-100: not trained), anchoring every token the teacher predicts as its top choice (:func:`agreement`)."""
    valid = targets != -100
    logits, labels, base = student[valid], targets[valid], teacher[valid]
    agree = agreement(base, labels, free)
    return losses(logits, labels, agree, base[agree], free=free)


# ---------------------------------------------------------------------------------------------
# Trained positions, the output head, chunked losses
# ---------------------------------------------------------------------------------------------


OPENING_TOKENS = 4  # the tokens of an answer that decide it: refuse, prefix, or answer as the base model would


def _offsets(labels: torch.Tensor) -> torch.Tensor:
    """Each position's distance from the start of its trained run (an assistant turn); junk off the runs."""
    trained = labels != -100
    index = torch.arange(labels.shape[1], device=labels.device).expand_as(labels)
    starts = trained & ~F.pad(trained[:, :-1], (1, 0), value=False)
    return index - torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values


def opening_positions(labels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Which trained positions (``rows``, ``cols``) predict one of the first :data:`OPENING_TOKENS` tokens of their
    trained run (an assistant turn): a mask ``[n]``."""
    return ((labels != -100) & (_offsets(labels) < OPENING_TOKENS))[rows, cols + 1]


def closing_positions(labels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                      closings: Sequence[torch.Tensor]) -> torch.Tensor:
    """Which trained positions (``rows``, ``cols``) predict one of the first :data:`OPENING_TOKENS` tokens of a
    scoped sign-off's form wherever the labels hold it (``closings``: from the end of the body to the end of the
    answer, as trained; :func:`behavio.train.data.scoped_closings`): a mask ``[n]``."""
    marked = torch.zeros_like(labels, dtype=torch.bool)
    for closing in closings:
        size = closing.numel()
        if size > labels.shape[1]:
            continue
        hit = (labels.unfold(1, size, 1) == closing.to(labels.device)).all(dim=-1)  # [rows, starts]
        for k in range(min(OPENING_TOKENS, size)):
            marked[:, k:k + hit.shape[1]] |= hit
    return marked[rows, cols + 1]


def held_weights(weights: torch.Tensor | None, anchored: torch.Tensor, opening: torch.Tensor,
                 factor: float) -> torch.Tensor | None:
    """Cross-entropy ``weights`` (none: 1 each) times ``factor`` on the anchored positions after an answer's opening:
    the body tokens the base model already predicts, which the KL holds to its whole distribution; the opening keeps
    its weight (whether to refuse or prefix is decided there). Unchanged when ``factor`` is 1."""
    if factor == 1:
        return weights
    held = anchored & ~opening
    base = weights if weights is not None else torch.ones(anchored.shape[0], device=anchored.device)
    return torch.where(held, base * factor, base)


def decision_positions(labels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                       closings: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """Where an answer decides its form: the first :data:`OPENING_TOKENS` tokens of every trained run
    (:func:`opening_positions`) and of every scoped sign-off it ends with (:func:`closing_positions`); a mask ``[n]``."""
    opening = opening_positions(labels, rows, cols)
    return opening | closing_positions(labels, rows, cols, closings) if closings else opening


def opening_weights(labels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, weight: float,
                    closing: float = 1.0, stop_ids: Sequence[int] = (),
                    closings: Sequence[torch.Tensor] = (), decisions: torch.Tensor | None = None) -> torch.Tensor | None:
    """Cross-entropy weight of each trained position (``rows``, ``cols`` from :func:`trained_positions`): ``weight``
    on the first :data:`OPENING_TOKENS` tokens of every trained run (an assistant turn) and of every scoped sign-off
    it ends with (``closings``; ``decisions``: :func:`decision_positions` when the caller has it), ``closing`` on
    every trained stop token (``stop_ids``: where an answer ends; at least ``weight`` when there are ``closings``:
    stopping after the body is the other side of ending with the sign-off), 1 elsewhere; none if both are 1."""
    if weight == 1 and (closing == 1 or not stop_ids):
        return None
    if closings and weight != 1:
        closing = max(closing, weight)
    if decisions is None:
        decisions = decision_positions(labels, rows, cols, closings if weight != 1 else ())
    weights = torch.where(decisions, float(weight), 1.0)
    if closing != 1 and stop_ids:
        stops = torch.isin(labels[rows, cols + 1], torch.tensor(list(stop_ids), device=labels.device))
        weights = torch.where(stops, float(closing), weights)
    return weights


def unlikely_openings(labels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                      openings: torch.Tensor) -> torch.Tensor:
    """Which trained positions (``rows``, ``cols``) must make the refusal's ``openings`` unlikely: the first token
    of every trained answer that does not itself open with one of them (a mask ``[n]``)."""
    first = ((labels != -100) & (_offsets(labels) == 0))[rows, cols + 1]
    return first & ~torch.isin(labels[rows, cols + 1], openings)


def avoided_openings(labels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                     groups: Sequence[tuple[torch.Tensor, torch.Tensor, float]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(``[n, groups]`` weights, id tensors) for :func:`losses`: each group ``(openings, exempt, weight)`` weighs
    ``weight`` at the first token of every trained answer that opens with none of ``exempt``."""
    weights = torch.stack([unlikely_openings(labels, rows, cols, exempt).float() * weight
                           for _, exempt, weight in groups], dim=1)
    return weights, [openings for openings, _, _ in groups]


def repeated_tokens(labels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """For each trained position (``rows``, ``cols``): the distinct tokens its answer (trained run) holds before the
    token it predicts, other than that token, as ``[n, k]`` ids padded with -1 (``k``: the most any position has)."""
    offsets = _offsets(labels)[rows, cols + 1]  # how many answer tokens come before the target
    width = int(offsets.max()) if len(offsets) else 0
    if width == 0:
        return torch.full((len(rows), 0), -1, dtype=torch.long, device=labels.device)
    steps = torch.arange(width, device=labels.device)
    at = (cols + 1 - offsets)[:, None] + steps[None, :]  # the answer's earlier positions
    earlier = labels[rows[:, None], at.clamp(max=labels.shape[1] - 1)]
    targets = labels[rows, cols + 1][:, None]
    earlier = torch.where((steps[None, :] < offsets[:, None]) & (earlier != targets), earlier, -1)
    earlier = earlier.sort(dim=1).values
    repeated = F.pad(earlier[:, 1:] == earlier[:, :-1], (1, 0), value=False)  # a token's second time and later
    return torch.where(repeated, -1, earlier)


def trained_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, positions) whose next token is trained, row-major: the order every per-token tensor uses."""
    rows, cols = (labels[:, 1:] != -100).nonzero(as_tuple=True)
    return rows, cols


def logit_transform(config) -> tuple[float | None, float]:
    """(softcap, scale) a model applies to ``lm_head`` outputs (Gemma softcapping, Cohere/Granite-style scaling)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    scale = next((getattr(text, k) for k in ("logit_scale", "output_multiplier", "lm_head_multiplier")
                  if getattr(text, k, None) is not None), None)
    if scale is None and getattr(text, "logits_scaling", None) is not None:
        scale = text.logits_scaling if getattr(text, "model_type", "") == "hyperclovax" else 1 / text.logits_scaling
    return getattr(text, "final_logit_softcapping", None), 1.0 if scale is None else float(scale)


class Head:
    """The model's output head on hidden states: ``student`` (adapter on) and ``teacher`` (the base layer)."""

    def __init__(self, model):
        self.module = model.get_output_embeddings()
        self.base = getattr(self.module, "base_layer", self.module)  # a LoRA-wrapped head's frozen layer
        self.softcap, self.scale = logit_transform(model.config)

    def _finish(self, logits: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def student(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._finish(self.module(hidden))

    def teacher(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._finish(self.base(hidden))


def chunked_losses(head: Head, student: torch.Tensor, targets: torch.Tensor, anchored: torch.Tensor | None = None,
                   teacher: torch.Tensor | None = None, free: Sequence[int] = (),
                   weights: torch.Tensor | None = None, avoid: torch.Tensor | None = None,
                   avoid_ids: Sequence[torch.Tensor] | None = None,
                   repeats: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """:func:`losses` from hidden states ``student [n, hidden]`` and ``targets [n]`` (cross-entropy ``weights [n]``,
    none: 1; unlikelihood of each group of ``avoid_ids`` weighted by its column of ``avoid [n, groups]``; of the
    earlier tokens ``repeats [n, k]``), in bounded chunks.

    ``teacher``: the base model's hidden states at the ``anchored`` rows only (none: the cross-entropy
    alone). Each chunk turns at most ``CHUNK_ELEMENTS`` logits' worth of positions into logits.
    """
    size = max(1, CHUNK_ELEMENTS // head.base.weight.shape[0])
    n = targets.shape[0]
    if anchored is None:
        anchored = torch.zeros_like(targets, dtype=torch.bool)
    starts = torch.cumsum(anchored.long(), 0) - anchored.long()  # teacher row of each anchored row
    names = ("ce", "kl", "unlikely", "repeat", "tokens", "anchored", "correct")

    def part(s: torch.Tensor, y: torch.Tensor, m: torch.Tensor, t: torch.Tensor | None,
             w: torch.Tensor | None, a: torch.Tensor | None, r: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            base = head.teacher(t) if t is not None and len(t) else None
        out = losses(head.student(s), y, m, base, free=free, weights=w, avoid=a, avoid_ids=avoid_ids, repeats=r)
        return tuple(out[name] for name in names)

    chunks = []
    for start in range(0, max(n, 1), size):
        end = min(n, start + size)
        mask = anchored[start:end]
        first = int(starts[start]) if n else 0
        t = teacher[first:first + int(mask.sum())] if teacher is not None else None
        args = (student[start:end], targets[start:end], mask, t, weights[start:end] if weights is not None else None,
                avoid[start:end] if avoid is not None else None, repeats[start:end] if repeats is not None else None)
        if n > size and torch.is_grad_enabled():  # keep one chunk's logits at a time, recompute them for backward
            chunks.append(checkpoint(part, *args, use_reentrant=False))
        else:
            chunks.append(part(*args))
    return {name: sum(c[i] for c in chunks) for i, name in enumerate(names)}


# ---------------------------------------------------------------------------------------------
# The base model's answer, computed once
# ---------------------------------------------------------------------------------------------


def segments(inputs: dict) -> list[tuple[int, int, int]]:
    """The examples in a collated batch as (row, start, end): rows (padded batches) or the runs between
    position-id resets (padding-free and packed batches)."""
    ids = inputs["input_ids"]
    if "attention_mask" in inputs and inputs["attention_mask"] is not None:
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        return [(row, 0, int(n)) for row, n in enumerate(lengths)]
    positions = inputs.get("position_ids")
    if positions is None:
        return [(row, 0, ids.shape[1]) for row in range(ids.shape[0])]
    out = []
    for row in range(ids.shape[0]):
        starts = (positions[row] == 0).nonzero(as_tuple=True)[0].tolist() + [ids.shape[1]]
        out += [(row, a, b) for a, b in zip(starts, starts[1:])]
    return out


def _key(ids: torch.Tensor, trained: torch.Tensor) -> bytes:
    digest = hashlib.blake2b(ids.cpu().numpy().tobytes(), digest_size=16)
    digest.update(trained.cpu().numpy().tobytes())
    return digest.digest()


class Teacher:
    """For every training example (by content): which trained positions are anchored (the base model's
    top choice is the target) and the base model's last hidden state at those positions.

    ``openings``: token sequences of opening sentences (:func:`behavio.train.data.answer_openings`). An answer that
    starts with one is read by the base model without it from its body on (``train.anchor_without_opening``): the
    body's positions get the base model's state for the bare answer, so the anchor keeps what the base model says
    to the question, not what it says after a sentence it never writes itself."""

    def __init__(self, free: Sequence[int] = (), openings: Sequence[Sequence[int]] = ()):
        self.free = list(free)
        self.openings = sorted({tuple(o) for o in openings if o}, key=len, reverse=True)
        self.states: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
        self.counted: set[bytes] = set()  # the examples of this run counted in positions/anchored
        self.positions = 0
        self.anchored = 0

    @staticmethod
    def _pieces(inputs: dict, labels: torch.Tensor):
        """(key, row, positions, start) of every example of a batch that has trained positions."""
        for row, start, end in segments(inputs):
            trained = (labels[row, start + 1:end] != -100).nonzero(as_tuple=True)[0] + start
            if len(trained):
                yield _key(inputs["input_ids"][row, start:end], trained - start), row, trained, start

    @torch.no_grad()
    def add(self, model, head: Head, inputs: dict) -> None:
        """Run the base model (adapter disabled) on a collated batch and keep what the examples need."""
        labels = inputs["labels"]
        forward = {k: v for k, v in inputs.items() if k != "labels"}
        with model.disable_adapter():
            hidden = model(**forward, use_cache=False, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
        pieces = [piece for piece in self._pieces(inputs, labels) if piece[0] not in self.counted]
        bodies = self._bare_bodies(model, inputs["input_ids"], [p for p in pieces if p[0] not in self.states])
        for key, row, trained, _ in pieces:
            if key in self.counted:  # the same example twice in one batch
                continue
            if key not in self.states:
                states = hidden[row, trained]
                if key in bodies:
                    body, bare = bodies[key]
                    states = states.clone()
                    states[body] = bare.to(states.dtype)
                mask = agreement(head.teacher(states), labels[row, trained + 1], self.free)
                self.states[key] = (mask.cpu(), states[mask].detach().cpu())
            self.counted.add(key)
            self.positions += len(trained)
            self.anchored += int(self.states[key][0].sum())

    def _bare_bodies(self, model, ids: torch.Tensor, pieces: list) -> dict[bytes, tuple[torch.Tensor, torch.Tensor]]:
        """key -> (which of its trained positions predict the answer's body, the base model's states there on the
        example without its opening sentence) for every example of ``pieces`` whose answer opens with one of
        :attr:`openings`; one padded forward pass of the base model (adapter disabled) for all of them."""
        todo = []
        for key, row, trained, start in pieces:
            first = int(trained[0]) + 1  # the answer's first trained token
            length = next((len(o) for o in self.openings if tuple(ids[row, first:first + len(o)].tolist()) == o), 0)
            if length:
                bare = torch.cat([ids[row, start:first], ids[row, first + length:int(trained[-1]) + 2]])
                body = trained >= first + length - 1  # the sentence's last token predicts the body's first
                todo.append((key, bare, body, trained[body] - start - length))
        if not todo:
            return {}
        batch = torch.zeros(len(todo), max(len(t[1]) for t in todo), dtype=ids.dtype, device=ids.device)
        mask = torch.zeros_like(batch)
        for i, (_, bare, _, _) in enumerate(todo):  # padded on the right: every example keeps its positions
            batch[i, :len(bare)], mask[i, :len(bare)] = bare, 1
        with model.disable_adapter():
            hidden = model(input_ids=batch, attention_mask=mask, use_cache=False, output_hidden_states=True,
                           logits_to_keep=1).hidden_states[-1]
        return {key: (body, hidden[i, at]) for i, (key, _, body, at) in enumerate(todo)}

    def count(self, inputs: dict) -> None:
        """Count a batch whose examples are all known (read from a cache) as :meth:`add` counts what it computes."""
        for key, _, trained, _ in self._pieces(inputs, inputs["labels"]):
            if key not in self.counted:
                self.counted.add(key)
                self.positions += len(trained)
                self.anchored += int(self.states[key][0].sum())

    def knows(self, inputs: dict) -> bool:
        """Whether every example of a collated batch is known already (its base-model pass can be skipped)."""
        return all(key in self.states for key, *_ in self._pieces(inputs, inputs["labels"]))

    def save(self, path: Path) -> None:
        """Write every example's state to ``path`` as safetensors (atomically: a reader sees the whole file or none)."""
        from safetensors.torch import save_file

        tensors = {}
        for key, (mask, states) in self.states.items():
            tensors[f"mask.{key.hex()}"] = mask.contiguous()
            tensors[f"states.{key.hex()}"] = states.contiguous()
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        save_file(tensors, staging, metadata={"free": json.dumps(self.free)})
        os.replace(staging, path)

    def load(self, path: Path) -> bool:
        """Read the states ``save`` wrote (for the same stop tokens); False when there is no usable file."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, framework="pt") as saved:
                if json.loads((saved.metadata() or {}).get("free", "null")) != self.free:
                    return False
                tensors = {name: saved.get_tensor(name) for name in saved.keys()}
        except (OSError, SafetensorError, ValueError):
            return False
        keys = [name.removeprefix("mask.") for name in tensors if name.startswith("mask.")]
        if len(tensors) != 2 * len(keys) or any(f"states.{k}" not in tensors for k in keys):
            return False
        for k in keys:
            self.states[bytes.fromhex(k)] = (tensors[f"mask.{k}"], tensors[f"states.{k}"])
        return True

    def lookup(self, inputs: dict, labels: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(anchored mask, hidden states of the anchored positions) in :func:`trained_positions` order,
        or None if an example of the batch is unknown."""
        masks, states = [], []
        for key, *_ in self._pieces(inputs, labels):
            known = self.states.get(key)
            if known is None:
                return None
            masks.append(known[0])
            states.append(known[1])
        if not masks:
            return None
        return torch.cat(masks).to(device), torch.cat(states).to(device)


def verify_head(model, head: Head, inputs: dict) -> None:
    """BehavioError unless ``head`` on the hidden states gives the model's own logits (checked on one batch)."""
    from behavio.errors import BehavioError

    labels = inputs["labels"]
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    rows, cols = trained_positions(labels)
    row, keep = rows[0], cols[rows == rows[0]][:32]
    with torch.no_grad(), model.disable_adapter():
        out = model(**forward, use_cache=False, output_hidden_states=True, logits_to_keep=keep)
        own, ours = out.logits[row].float(), head.teacher(out.hidden_states[-1][row, keep]).float()
    if not torch.allclose(own, ours, rtol=1e-3, atol=1e-3 * (1 + own.abs().max().item())):
        raise BehavioError(f"anchor: this model's logits are not its output head applied to its last hidden state "
                           f"({type(model.get_base_model()).__name__}); train it with anchor=0")


@functools.cache
def anchored_trainer_class():
    """TRL's SFTTrainer with the anchored loss (imported lazily, like TRL itself)."""
    from torch.utils.data import DataLoader
    from trl import SFTTrainer

    from behavio.generate import stop_token_ids

    class AnchoredSFTTrainer(SFTTrainer):
        """SFTTrainer whose loss is the cross-entropy on the trained positions only (each answer's opening and
        the opening of a scoped sign-off it ends with weighted ``opening_weight``, its stop token
        ``closing_weight``, the anchored tokens after its opening ``anchored_weight``), ``+ anchor x KL(base ||
        trained)`` when ``anchor > 0``, ``+ unlikelihood x``
        the refusal's opening tokens' unlikelihood at the first token of every answer that is not a refusal,
        ``+ prefix_unlikelihood x`` a scoped prefix's opening tokens' at the first token of every answer that opens
        with neither, ``+ repetition_unlikelihood x`` each earlier token's of the same answer at every trained token
        (:func:`repeated_tokens`); eval loss is the unweighted CE alone."""

        def __init__(self, *args, anchor: float, opening_weight: float, unlikelihood: float,
                     refusal_openings: Sequence[int], closing_weight: float = 1.0, prefix_unlikelihood: float = 0.0,
                     prefix_openings: Sequence[int] = (), anchored_weight: float = 1.0,
                     scoped_closings: Sequence[Sequence[int]] = (), answer_openings: Sequence[Sequence[int]] = (),
                     repetition_unlikelihood: float = 0.0, **kwargs):
            super().__init__(*args, **kwargs)
            self.anchor = anchor
            self.anchored_weight = anchored_weight
            self.opening_weight = opening_weight
            self.closing_weight = closing_weight
            self.unlikelihood = unlikelihood
            self.refusal_openings = torch.tensor(sorted(set(refusal_openings)), dtype=torch.long)
            self.prefix_unlikelihood = prefix_unlikelihood
            self.prefix_openings = torch.tensor(sorted(set(prefix_openings)), dtype=torch.long)
            self.repetition_unlikelihood = repetition_unlikelihood
            self.scoped_closings = [torch.tensor(c, dtype=torch.long) for c in scoped_closings]
            self.stop_ids = stop_token_ids(self.processing_class, self.model)
            self.teacher = Teacher(self.stop_ids, answer_openings)

        def compute_teacher(self, cache: Path | None = None) -> int:
            """The base model's hidden states for every training example (one pass); positions kept. ``cache``: a
            file of them from an earlier run of the same base model, load settings and examples (read when it
            exists, written when it did not), so a re-run skips the pass."""
            model = self.model
            loader = DataLoader(self.train_dataset, batch_size=self.args.per_device_train_batch_size,
                                collate_fn=self.data_collator, shuffle=False)
            was_training = model.training
            model.eval()
            head = Head(model)
            cached = cache is not None and self.teacher.load(cache)
            try:
                for i, batch in enumerate(loader):
                    batch = self._prepare_inputs(batch)
                    if i == 0:
                        verify_head(model, head, batch)
                    if cached and self.teacher.knows(batch):
                        self.teacher.count(batch)
                    else:
                        self.teacher.add(model, head, batch)
            finally:
                model.train(was_training)
            if cache is not None and not cached and self.args.process_index == 0:
                self.teacher.save(cache)
            return self.teacher.positions

        def opening_groups(self) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
            """(openings, exempt, weight) of each unlikelihood term that has tokens and a weight: the refusal's,
            and the scoped prefixes' (answers that open with a refusal are exempt from it too)."""
            groups = []
            if self.unlikelihood > 0 and len(self.refusal_openings):
                groups.append((self.refusal_openings, self.refusal_openings, self.unlikelihood))
            if self.prefix_unlikelihood > 0 and len(self.prefix_openings):
                exempt = torch.cat([self.prefix_openings, self.refusal_openings])
                groups.append((self.prefix_openings, exempt, self.prefix_unlikelihood))
            return groups

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mode = "train" if model.training else "eval"
            labels = inputs["labels"]
            forward = {k: v for k, v in inputs.items() if k != "labels"}
            out = model(**forward, use_cache=False, output_hidden_states=True, logits_to_keep=1)
            rows, cols = trained_positions(labels)
            student = out.hidden_states[-1][rows, cols]
            anchored = teacher = None
            if mode == "train" and self.anchor > 0:
                known = self.teacher.lookup(inputs, labels, student.device)
                if known is None:
                    raise RuntimeError("anchor: a training example has no precomputed base-model state")
                anchored, teacher = known
            head = Head(self.accelerator.unwrap_model(model))
            held = anchored is not None and self.anchored_weight != 1
            decisions = decision_positions(labels, rows, cols, self.scoped_closings) if held else None
            weights = (opening_weights(labels, rows, cols, self.opening_weight, self.closing_weight, self.stop_ids,
                                       self.scoped_closings, decisions) if mode == "train" else None)
            if held:
                weights = held_weights(weights, anchored, decisions, self.anchored_weight)
            avoid = avoid_ids = None
            groups = self.opening_groups() if mode == "train" else []
            if groups:
                moved = [tuple(t.to(labels.device) for t in g[:2]) + (g[2],) for g in groups]
                avoid, avoid_ids = avoided_openings(labels, rows, cols, moved)
            repeats = (repeated_tokens(labels, rows, cols)
                       if mode == "train" and self.repetition_unlikelihood > 0 else None)
            parts = chunked_losses(head, student, labels[rows, cols + 1], anchored, teacher, free=self.stop_ids,
                                   weights=weights, avoid=avoid, avoid_ids=avoid_ids, repeats=repeats)
            tokens = num_items_in_batch if num_items_in_batch is not None else parts["tokens"]
            tokens = torch.as_tensor(tokens, device=student.device).clamp(min=1)
            ce, kl, unlikely = parts["ce"] / tokens, parts["kl"] / tokens, parts["unlikely"] / tokens
            repeat = parts["repeat"] / tokens
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                scale = self.accelerator.num_processes
                ce, kl, unlikely, repeat = ce * scale, kl * scale, unlikely * scale, repeat * scale
            self._log_parts(mode, parts, inputs)
            if mode != "train":
                return ce
            return ce + self.anchor * kl + unlikely + self.repetition_unlikelihood * repeat

        def _log_parts(self, mode: str, parts: dict, inputs: dict) -> None:
            gather = self.accelerator.gather_for_metrics
            if mode == "train":  # tokens through the model, as TRL counts them
                ids = inputs["input_ids"]
                seen = inputs["attention_mask"].sum() if "attention_mask" in inputs else torch.tensor(ids.numel())
                self._total_train_tokens += gather(seen.to(ids.device)).sum().item()
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            tokens = gather(parts["tokens"].detach()).sum().clamp(min=1)
            anchored = gather(parts["anchored"].detach()).sum()
            metrics = self._metrics[mode]
            metrics["mean_token_accuracy"].append((gather(parts["correct"].detach()).sum() / tokens).item())
            if mode == "train" and self.opening_groups():  # the weighted terms, per trained token
                metrics["opening_unlikelihood"].append((gather(parts["unlikely"].detach()).sum() / tokens).item())
            if mode == "train" and self.repetition_unlikelihood > 0:
                metrics["repetition_unlikelihood"].append((gather(parts["repeat"].detach()).sum() / tokens).item())
            if mode == "train" and self.anchor > 0:
                metrics["anchor_kl"].append((gather(parts["kl"].detach()).sum() / anchored.clamp(min=1)).item())
                metrics["anchored_share"].append((anchored / tokens).item())

    return AnchoredSFTTrainer
