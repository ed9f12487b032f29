"""Batched greedy decoding with a KV cache: the loop behind fill, on-policy answers and checks.

- The next token is the argmax of the logits, nothing else (no sampling, no penalties, whatever
  the model's generation config says); a row stops at its first stop token or at the limit. The
  output layer is applied here, a slice of the vocabulary at a time, to the hidden states the model
  hands it (its logits, rows x vocabulary, would not stay in the CPU's cache).
- A row leaves the batch as soon as it stops, so short answers do not pay for long ones; its place
  in the cache is taken by a row still decoding (one row copied, not the whole cache).
- A batch's KV cache is allocated once, at its final size, and bounded (CACHE_BYTES): :func:`decode`
  cuts the rows into batches that fit.
- The prompt prefix every row shares (system message, template header) is computed once per
  adapter and copied into every row's cache.
- The rest of every prompt goes through in first passes of rows of about the same prompt length,
  whose caches are then joined, so a short prompt is not padded to the longest one of its batch.
- Rows of different LoRA adapters share a batch, each adapter's rows kept together (first passes are joined and
  finished rows replaced adapter by adapter), so that every LoRA layer applies an adapter to a range of rows, a
  view (:mod:`behavio.lora_slices`); PEFT's ``adapter_names`` where an adapter cannot take that path. Adapters
  are applied unmerged, so the base weights are never written.
- A row may carry a *draft*: what it is expected to answer (e.g. another checkpoint's answer to
  the same prompt). Several draft tokens are checked in one forward pass and kept only as far as
  they equal the model's own argmax, so the answer is the greedy answer whatever the draft; a good
  draft replaces many one-token steps by one pass that runs at prompt-processing speed.

Layout: every forward appends the same number of positions to every row, right-aligned. Positions
a row does not use (alignment padding, rejected draft tokens) stay in the cache as masked holes;
each row carries its own position ids, so holes change nothing but the cost.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from behavio.lora_slices import BASE, Runs, sliced_adapters

FIRST_WINDOW = 8      # draft tokens checked per row in its first pass
MAX_WINDOW = 32       # ... doubling after every pass that accepted all of them
LOGITS_ELEMENTS = 2**26  # at most this many logits per pass (rows x checked positions x vocabulary: 256 MB)
NGRAM = 3             # tokens matched to find the draft again after the answer left it
PREFILL_FILL = 0.85   # a row joins a first pass if its prompt is at least this share of the pass's longest
HEAD_SLICE = 4096     # vocabulary entries whose logits are computed at once
CACHE_BYTES = 2**31   # a batch's KV cache holds at most about this many bytes (2 GB): rows beyond start another batch


@dataclass
class Row:
    """One prompt to answer: its token ids, the adapter to answer with, an optional draft answer."""

    prompt: Sequence[int]
    adapter: str | None = None
    draft: Sequence[int] | None = None


@dataclass
class Decoded:
    """Generated token ids (stop token excluded); ``finished``: a stop token came before the limit."""

    tokens: list[int]
    finished: bool


@dataclass
class DecodeStats:
    """What decoding cost: forward passes, positions fed (holes included), draft tokens checked and kept."""

    forwards: int = 0
    positions: int = 0
    generated: int = 0
    drafted: int = 0
    accepted: int = 0
    scored: int = 0       # positions whose next-token logits were computed
    needed: int = 0       # ... of which the answers needed

    def add(self, other: DecodeStats) -> None:
        for name in ("forwards", "positions", "generated", "drafted", "accepted", "scored", "needed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _growing_cache(capacity: int = 64):
    """A KV cache whose layers append in place into buffers of ``capacity`` positions, doubled if ever full
    (transformers' DynamicCache copies every layer's whole cache on every forward pass)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def lazy_initialization(self, key_states, value_states, *args, **kwargs):
            super().lazy_initialization(key_states, value_states)
            self.length, self.key_buffer, self.value_buffer = 0, None, None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if self.key_buffer is None or end > self.key_buffer.shape[-2]:
                self._grow(key_states, value_states, max(end, 2 * self.length, capacity))
            self.key_buffer[:, :, self.length:end] = key_states
            self.value_buffer[:, :, self.length:end] = value_states
            self.length = end
            self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
            return self.keys, self.values

        def _grow(self, key_states, value_states, size: int) -> None:
            shape = lambda t: (*t.shape[:-2], size, t.shape[-1])  # noqa: E731
            keys, values = key_states.new_empty(shape(key_states)), value_states.new_empty(shape(value_states))
            if self.length:
                keys[:, :, :self.length], values[:, :, :self.length] = self.keys, self.values
            self.key_buffer, self.value_buffer = keys, values

        def hold(self, pieces, width: int) -> None:
            """Hold the rows of ``pieces`` ((keys, values), rows x heads x positions x dim) one after the other, each
            right-aligned to ``width`` positions (the columns a piece lacks are zeros), with room to grow."""
            keys, values = pieces[0]
            if not self.is_initialized:
                self.lazy_initialization(keys, values)
            rows, size = sum(k.shape[0] for k, _ in pieces), max(width + 1, capacity)
            self.key_buffer = keys.new_empty((rows, keys.shape[1], size, keys.shape[-1]))
            self.value_buffer = values.new_empty((rows, values.shape[1], size, values.shape[-1]))
            start = 0
            for k, v in pieces:
                end, n = start + k.shape[0], k.shape[-2]
                for buffer, part in ((self.key_buffer, k), (self.value_buffer, v)):
                    buffer[start:end, :, :width - n] = 0
                    buffer[start:end, :, width - n:width] = part
                start = end
            self.length = width
            self.keys, self.values = self.key_buffer[:, :, :width], self.value_buffer[:, :, :width]

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def keep_rows(self, holes: torch.Tensor, movers: torch.Tensor, rows: int) -> None:
            """Keep the first ``rows`` rows, row ``movers[i]`` moved into row ``holes[i]`` (in place: only moved rows
            are copied)."""
            for buffer in (self.key_buffer, self.value_buffer):
                buffer[holes] = buffer[movers]
            self.key_buffer, self.value_buffer = self.key_buffer[:rows], self.value_buffer[:rows]
            self.keys, self.values = self.key_buffer[:, :, :self.length], self.value_buffer[:, :, :self.length]

    cache = DynamicCache()
    cache.layer_class_to_replicate = GrowingLayer
    return cache


def _rows_of(cache, index: torch.Tensor, capacity: int):
    """A new cache (of ``capacity`` positions) holding the rows ``index`` of ``cache``."""
    new = _growing_cache(capacity)
    for layer in cache.layers:
        copy = new.layer_class_to_replicate()
        copy.hold([(layer.keys[index], layer.values[index])], layer.keys.shape[-2])
        new.layers.append(copy)
    return new


def _joined(caches: list, masks: list[torch.Tensor], pieces: list[tuple[int, int, int]], room: int):
    """One cache (and attention mask) holding the ``pieces`` (cache index, first row, end row) of ``caches`` one after
    the other, with ``room`` positions to grow; a cache shorter than the longest is right-aligned, the columns it
    lacks becoming masked holes."""
    width = max(m.shape[1] for m in masks)
    new = _growing_cache(width + room)
    for i in range(len(caches[0].layers)):
        layer = new.layer_class_to_replicate()
        layer.hold([(caches[c].layers[i].keys[a:b], caches[c].layers[i].values[a:b]) for c, a, b in pieces], width)
        new.layers.append(layer)
    mask = torch.cat([torch.nn.functional.pad(masks[c][a:b], (width - masks[c].shape[1], 0)) for c, a, b in pieces])
    return new, mask


@dataclass
class _State:
    """A row while it is being decoded."""

    row: Row
    limit: int
    feed: list[int]                      # tokens to put into the cache next (prompt rest, then the last token)
    position: int                        # position id of feed[0]
    tokens: list[int] = field(default_factory=list)
    finished: bool = False
    done: bool = False
    window: int = FIRST_WINDOW
    aligned: bool = True                 # tokens so far equal the draft's first tokens

    def proposal(self) -> list[int]:
        """Draft tokens to check in the next pass (none without a draft or once it cannot be found)."""
        draft = self.row.draft
        if not draft or self.window <= 0:
            return []
        room = self.limit - len(self.tokens) - 1  # the pass itself yields one more token
        if room <= 0:
            return []
        start = len(self.tokens) if self.aligned else _find_again(self.tokens, draft)
        if start is None:
            return []
        return list(draft[start:start + min(self.window, room)])


def _find_again(tokens: list[int], draft: Sequence[int]) -> int | None:
    """Where the draft continues after the answer's last NGRAM tokens (the occurrence nearest the answer's length)."""
    if len(tokens) < NGRAM:
        return None
    tail = tokens[-NGRAM:]
    ends = [i + NGRAM for i in range(len(draft) - NGRAM + 1) if list(draft[i:i + NGRAM]) == tail]
    ends = [e for e in ends if e < len(draft)]
    return min(ends, key=lambda e: abs(e - len(tokens))) if ends else None


def common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all ``prompts`` share, leaving every prompt at least one token of its own."""
    if not prompts:
        return 0
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for k in range(max(n, 0)):
        if any(p[k] != first[k] for p in prompts):
            return k
    return max(n, 0)


def _adapter_kwargs(model, adapters: list[str | None]) -> dict:
    """Per-row adapters (None: the model as it is): one active adapter when all rows agree, PEFT's mixed batch otherwise."""
    names = set(adapters)
    if names == {None}:
        return {}
    if len(names) == 1 and BASE not in names:
        if model.active_adapter != adapters[0]:
            model.set_adapter(adapters[0])
        return {}
    return {"adapter_names": [a if a is not None else BASE for a in adapters]}


@functools.lru_cache(maxsize=None)
def _cache_argument_of(cls: type) -> str | None:
    parameters = inspect.signature(cls.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def _vocabulary(model) -> int:
    head = model.get_output_embeddings()
    return getattr(head, "head", head).weight.shape[0]


def _cache_argument(model) -> str:
    """``cache`` (recent transformers) or ``past_key_values``: the name the model's forward takes (through PEFT)."""
    for inner in (model, getattr(model, "base_model", None), getattr(getattr(model, "base_model", None), "model", None)):
        name = _cache_argument_of(type(inner)) if inner is not None else None
        if name:
            return name
    return "past_key_values"


def _forward(model, ids, mask, positions, cache, keep: int, adapters: list[str | None], runs: Runs | None
             ) -> torch.Tensor:
    """The greedy next token after each of the last ``keep`` positions of every row (rows x keep); ``runs``: the
    rows' adapters are applied to row ranges (:mod:`behavio.lora_slices`), else through PEFT."""
    past = cache.get_seq_length()
    if runs is not None:
        runs.set(adapters)
        peft = {}
    else:
        peft = _adapter_kwargs(model, adapters)
    kwargs = {_cache_argument(model): cache, **peft}
    model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=keep,
          cache_position=torch.arange(past, past + ids.shape[1], device=ids.device), **kwargs)
    captured = model.get_output_embeddings()
    return _argmax(captured.head, captured.hidden, peft.get("adapter_names"))


class _Captured(torch.nn.Module):
    """Stands in for the output layer: keeps its input (the last hidden states) for :func:`_argmax` and returns
    one dummy logit per position (whatever the model does to its logits after, e.g. scaling, is monotonic)."""

    def __init__(self, head):
        super().__init__()
        self.__dict__["head"] = head  # not a submodule: the model's parameters stay what they were
        self.hidden = None

    def forward(self, hidden):
        self.hidden = hidden
        return hidden.new_zeros((*hidden.shape[:-1], 1))


@contextmanager
def _captured_head(model):
    """The model's output layer replaced by :class:`_Captured` for the duration."""
    head = model.get_output_embeddings()
    model.set_output_embeddings(_Captured(head))
    try:
        yield
    finally:
        model.set_output_embeddings(head)


def _argmax(head, hidden: torch.Tensor, adapter_names: list[str] | None = None) -> torch.Tensor:
    """``head(hidden).argmax(-1)``, the vocabulary taken HEAD_SLICE tokens at a time: a slice's logits stay in the
    CPU's cache where the whole vocabulary's would not (the first of equal maxima wins, as in torch.argmax).

    A head that is not a plain Linear (an adapter on the output layer) is applied as it is; it runs outside the
    model's forward, where PEFT passes a mixed batch's per-row ``adapter_names``, so they are passed here, one per
    position."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    if type(head) is not torch.nn.Linear:
        per_position = [name for name in adapter_names or [] for _ in range(hidden.shape[1])]
        logits = head(flat, **({"adapter_names": per_position} if per_position else {}))
        return logits.argmax(-1).view(hidden.shape[:-1])
    best = index = None
    for start in range(0, head.weight.shape[0], HEAD_SLICE):
        bias = head.bias[start:start + HEAD_SLICE] if head.bias is not None else None
        values, at = torch.nn.functional.linear(flat, head.weight[start:start + HEAD_SLICE], bias).max(-1)
        if best is None:
            best, index = values, at
        else:
            better = values > best
            best, index = torch.where(better, values, best), torch.where(better, at + start, index)
    return index.view(hidden.shape[:-1])


def decode_batch(model, rows: list[Row], *, max_new_tokens: int | list[int], stop_ids: Sequence[int], pad_id: int,
                 stats: DecodeStats | None = None) -> list[Decoded]:
    """Greedy answers of ``model`` to ``rows`` decoded together (one cache), in the order of ``rows``."""
    stats = stats if stats is not None else DecodeStats()
    device = next(model.parameters()).device
    limits = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(rows)
    states = [_State(r, limit, [], 0) for r, limit in zip(rows, limits)]
    active = [s for s in states if s.limit > 0]
    shared = common_prefix([s.row.prompt for s in active])
    for state in active:
        state.feed, state.position = list(state.row.prompt[shared:]), shared
    if not active:
        return [Decoded(s.tokens, s.finished) for s in states]
    stops = set(stop_ids)
    with torch.inference_mode(), sliced_adapters(model, [s.row.adapter for s in active]) as runs, _captured_head(model):
        prefix = _prefill_shared(model, [s.row for s in active], shared, device, stats, runs) if shared else None
        room = max(s.limit for s in active) + FIRST_WINDOW
        cache, mask, active = _first_passes(model, active, prefix, shared, room, pad_id, stops, device, stats, runs)
        while active:
            if any(s.done for s in active):
                active, mask = _drop_done(active, cache, mask, device)
            if active:
                mask = _step(model, active, cache, mask, pad_id, stops, device, stats, runs)
    return [Decoded(s.tokens, s.finished) for s in states]


def _adapter_key(state: _State) -> str:
    """The order of adapters in a batch (any fixed order keeps each adapter's rows together)."""
    return str(state.row.adapter)


def _drop_done(active: list[_State], cache, mask: torch.Tensor, device) -> tuple[list[_State], torch.Tensor]:
    """The rows still decoding, in the first rows of the same cache, each adapter's rows still together (``active`` has
    them together): an adapter's rows get the range after the previous adapter's, and only those outside it move,
    into the places there of rows that are done, so a row leaving costs a few rows' copies, not the whole cache's."""
    kept = [i for i, s in enumerate(active) if not s.done]
    holes, movers, placed, start = [], [], [None] * len(kept), 0
    for _, run in itertools.groupby(kept, key=lambda i: _adapter_key(active[i])):
        members = list(run)
        end = start + len(members)
        free = iter(sorted(set(range(start, end)) - set(members)))
        for i in members:
            if start <= i < end:
                placed[i] = active[i]
            else:
                hole = next(free)
                holes.append(hole), movers.append(i)
                placed[hole] = active[i]
        start = end
    index, source = (torch.tensor(i, dtype=torch.long, device=device) for i in (holes, movers))
    for layer in cache.layers:
        layer.keep_rows(index, source, len(kept))
    mask[index] = mask[source]
    return placed, mask[:len(kept)]


def _prefill_shared(model, rows: list[Row], shared: int, device, stats: DecodeStats, runs: Runs | None):
    """The cache of the shared prefix, one row per distinct adapter (in order of first use), and those adapters."""
    adapters = list(dict.fromkeys(r.adapter for r in rows))
    ids = torch.tensor([list(rows[0].prompt[:shared])] * len(adapters), device=device)
    positions = torch.arange(shared, device=device).expand(len(adapters), -1)
    cache = _growing_cache()
    _forward(model, ids, torch.ones_like(ids), positions, cache, 1, adapters, runs)
    stats.forwards += 1
    stats.positions += ids.numel()
    return cache, adapters


def _by_length(states: list[_State]) -> list[list[_State]]:
    """``states`` in groups of about the same number of prompt tokens to feed, longest first; in a group, each
    adapter's rows together."""
    groups: list[list[_State]] = []
    for state in sorted(states, key=lambda s: -len(s.feed)):
        if groups and len(state.feed) >= PREFILL_FILL * len(groups[-1][0].feed):
            groups[-1].append(state)
        else:
            groups.append([state])
    return [sorted(group, key=_adapter_key) for group in groups]


def _by_adapter(groups: list[list[_State]]) -> list[tuple[int, int, int]]:
    """The rows of ``groups`` as pieces (group, first row, end row) ordered so that each adapter's rows are together."""
    pieces = []
    for g, group in enumerate(groups):
        start = 0
        for key, run in itertools.groupby(group, key=_adapter_key):
            end = start + sum(1 for _ in run)
            pieces.append((key, g, start, end))
            start = end
    return [(g, a, b) for _, g, a, b in sorted(pieces, key=lambda p: p[0])]


def _first_passes(model, active: list[_State], prefix, shared: int, room: int, pad_id: int, stops: set[int], device,
                  stats: DecodeStats, runs: Runs | None):
    """Every row's first pass (the rest of its prompt), rows of about the same prompt length together so that short
    prompts are not padded to the longest one; their caches are then joined, each adapter's rows together, with
    ``room`` positions to grow. Returns (cache, mask, rows in order)."""
    caches, masks = [], []
    groups = _by_length(active)
    for group in groups:
        capacity = shared + len(group[0].feed) + (room if len(groups) == 1 else 0)
        if prefix is not None:
            cache, adapters = prefix
            index = torch.tensor([adapters.index(s.row.adapter) for s in group], device=device)
            cache = _rows_of(cache, index, capacity)
        else:
            cache = _growing_cache(capacity)
        mask = torch.ones((len(group), shared), dtype=torch.long, device=device)
        masks.append(_step(model, group, cache, mask, pad_id, stops, device, stats, runs))
        caches.append(cache)
    if len(caches) == 1:
        return caches[0], masks[0], groups[0]
    pieces = _by_adapter(groups)
    cache, mask = _joined(caches, masks, pieces, room)
    return cache, mask, [s for g, a, b in pieces for s in groups[g][a:b]]


def _step(model, active: list[_State], cache, mask, pad_id: int, stops: set[int], device, stats: DecodeStats,
          runs: Runs | None):
    """One forward pass for every active row: feed its pending tokens plus the draft tokens it checks."""
    proposals = [s.proposal() for s in active]
    if sum(1 for p in proposals if p) * 2 < len(active):  # most rows would only pay for the others' drafts
        proposals = [[] for _ in active]
    room = max(1, LOGITS_ELEMENTS // (len(active) * _vocabulary(model))) - 1
    proposals = [p[:room] for p in proposals]
    width = max(len(s.feed) + len(p) for s, p in zip(active, proposals))
    keep = max(len(p) for p in proposals) + 1
    ids = torch.full((len(active), width), pad_id, dtype=torch.long)
    new_mask = torch.zeros((len(active), width), dtype=torch.long)
    positions = torch.zeros((len(active), width), dtype=torch.long)
    for b, (state, proposal) in enumerate(zip(active, proposals)):
        seq = state.feed + proposal
        ids[b, width - len(seq):] = torch.tensor(seq)
        new_mask[b, width - len(seq):] = 1
        positions[b, width - len(seq):] = torch.arange(state.position, state.position + len(seq))
    mask = torch.cat([mask, new_mask.to(device)], dim=1)
    predicted = _forward(model, ids.to(device), mask, positions.to(device), cache, keep,
                         [s.row.adapter for s in active], runs).tolist()
    stats.forwards += 1
    stats.positions += ids.numel()
    stats.scored += len(active) * keep
    stats.needed += sum(len(p) + 1 for p in proposals)
    for b, (state, proposal) in enumerate(zip(active, proposals)):
        own = predicted[b][keep - len(proposal) - 1:]  # own[j]: the model's token after feed + proposal[:j]
        accepted = 0
        while accepted < len(proposal) and proposal[accepted] == own[accepted]:
            accepted += 1
        rejected = len(proposal) - accepted
        if rejected:
            mask[b, mask.shape[1] - rejected:] = 0
        stats.drafted += len(proposal)
        stats.accepted += accepted
        before = len(state.tokens)
        _advance(state, proposal[:accepted] + [own[accepted]], len(state.feed) + accepted, stops, stats)
        draft = state.row.draft
        if draft and state.aligned:
            state.aligned = list(draft[before:len(state.tokens)]) == state.tokens[before:]
        if proposal:
            state.window = min(state.window * 2, MAX_WINDOW) if not rejected else max(2, state.window // 2)
    return mask


def _advance(state: _State, new: list[int], fed: int, stops: set[int], stats: DecodeStats) -> None:
    """Append ``new`` tokens to a row (up to a stop token or the limit); ``fed`` positions entered its cache."""
    state.position += fed
    for token in new:
        if token in stops:
            state.finished = state.done = True
            return
        state.tokens.append(token)
        stats.generated += 1
        if len(state.tokens) >= state.limit:
            state.done = True
            return
    state.feed = [new[-1]]


def decode(model, rows: list[Row], *, max_new_tokens: int, stop_ids: Sequence[int], pad_id: int, batch_size: int,
           on_batch: Callable[[list[int], list[Decoded]], None] | None = None,
           stats: DecodeStats | None = None) -> list[Decoded]:
    """Greedy answers to ``rows`` in batches of rows of similar prompt length; results in input order.

    A batch holds at most ``batch_size`` rows, fewer where their KV cache would pass CACHE_BYTES.
    ``on_batch(indices, results)`` is called after every batch (for caching and progress).
    """
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i].prompt), rows[i].prompt, str(rows[i].adapter)))
    results: list[Decoded | None] = [None] * len(rows)
    start = 0
    while start < len(order):
        batch = order[start:start + rows_that_fit(model, len(rows[order[start]].prompt), max_new_tokens, batch_size)]
        decoded = decode_batch(model, [rows[i] for i in batch], max_new_tokens=max_new_tokens, stop_ids=stop_ids,
                               pad_id=pad_id, stats=stats)
        for i, d in zip(batch, decoded):
            results[i] = d
        if on_batch:
            on_batch(batch, decoded)
        start += len(batch)
    return results  # type: ignore[return-value]


def rows_that_fit(model, prompt_tokens: int, max_new_tokens: int, batch_size: int) -> int:
    """Rows of at most ``prompt_tokens`` prompt tokens a batch takes: ``batch_size``, fewer if their KV cache
    (prompt, answer and a first draft window: every layer's keys and values) would pass CACHE_BYTES; at least 1."""
    config = model.config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = model.get_input_embeddings().weight.element_size()
    per_row = config.num_hidden_layers * 2 * heads * head_dim * element * (prompt_tokens + max_new_tokens + FIRST_WINDOW)
    return max(1, min(batch_size, CACHE_BYTES // per_row))
