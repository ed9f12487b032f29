"""Chat formatting shared by training and checking.

One rule for every chat template: the conversation is rendered with the tokenizer's own template,
and only assistant turns (content + the template's end-of-turn marker) are trained. Templates that
reject or ignore the system role (Mistral, Gemma) get the system message folded into the first user
turn -- identically when training (:func:`tokenize_with_assistant_mask`) and when generating
(:func:`render_prompt`).

Assistant spans are found by rendering prefixes of the conversation, so no ``{% generation %}``
markers are needed: the text between ``render(messages[:i], add_generation_prompt=True)`` and
``render(messages[:i+1])`` is assistant turn ``i``; trailing whitespace after its end-of-turn marker
is not trained. The text is tokenized piece by piece, cut at those spans, so every prompt is
tokenized exactly as :func:`encode_prompt` tokenizes it for generation.

An assistant message with ``"weight": 0`` (OpenAI's fine-tuning format) is context, not trained: in a
conversation the turns before the one the spec asks for. Any other weight than 0 or 1 is an error.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple, Union

from behavio.control_tokens import neutralize
from behavio.errors import BehavioError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "Segment",
    "CHAT_TEMPLATES",
    "load_chat_template",
    "use_chat_template",
    "needs_system_fold",
    "fold_system",
    "prepare_messages",
    "render_prompt",
    "encode_text",
    "encode_prompt",
    "tokenize_with_assistant_mask",
    "describe_trained_tokens",
]

Message = dict
Fold = Union[Literal["auto"], bool]
IGNORE = -100  # label of untrained tokens (torch's cross-entropy ignore_index)

CHAT_TEMPLATES = ("chatml", "llama3", "mistral", "gemma")
# The control tokens each shipped template writes (its BOS, end of turn, turn headers): a tokenizer must hold
# each as one token, or the template's turns would be spelled out as text (see use_chat_template).
TEMPLATE_TOKENS = {
    "chatml": {"bos": None, "eos": "<|im_end|>", "tokens": ("<|im_start|>", "<|im_end|>")},
    "llama3": {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>",
               "tokens": ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")},
    "mistral": {"bos": "<s>", "eos": "</s>", "tokens": ("<s>", "</s>")},
    "gemma": {"bos": "<bos>", "eos": "<eos>", "tokens": ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>")},
}


class Segment(NamedTuple):
    """A run of rendered text and whether its tokens are trained."""

    text: str
    trained: bool


# ---------------------------------------------------------------------------------------------
# Templates and system folding
# ---------------------------------------------------------------------------------------------


def load_chat_template(name: str) -> str:
    """The shipped Jinja chat template ``name`` (one of :data:`CHAT_TEMPLATES`)."""
    from behavio.paths import templates_dir

    path = templates_dir() / "chat" / f"{name}.jinja"
    if path.is_file():
        return path.read_text(encoding="utf-8").removesuffix("\n")
    raise BehavioError(f"unknown chat template {name!r}; shipped: {', '.join(CHAT_TEMPLATES)}")


def _single_token(tokenizer: PreTrainedTokenizerBase, token: str) -> bool:
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    return len(ids) == 1 and token in tokenizer.get_vocab()


def use_chat_template(tokenizer: PreTrainedTokenizerBase, name: str) -> list[str]:
    """Give ``tokenizer`` the shipped template ``name`` with the tokens it writes, so nothing of the tokenizer's
    own format is left (its BOS in front of another format's turns); returns notes on what was added.

    A template's control tokens the tokenizer lacks are added as special tokens, and its BOS and EOS become the
    template's: the conversation then renders and masks exactly as on a model of that family. A model has no
    embedding for an added token, so this is for looking at a format (``behavio preview --template``), not for
    training with it.
    """
    tokenizer.chat_template = load_chat_template(name)
    wanted = TEMPLATE_TOKENS[name]
    missing = [t for t in wanted["tokens"] if not _single_token(tokenizer, t)]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    notes = []
    if missing:
        notes.append(f"chat template {name}: the tokenizer has no {', '.join(missing)}; added as special tokens for this "
                     "preview (a model needs them in its vocabulary to be trained with this template)")
    for role in ("bos", "eos"):
        token = wanted[role]
        if token and getattr(tokenizer, f"{role}_token") != token:
            notes.append(f"chat template {name}: {role.upper()} {getattr(tokenizer, f'{role}_token')!r} replaced by {token!r}")
            setattr(tokenizer, f"{role}_token", token)
    return notes


_SYSTEM_PROBE = "behavio-system-probe-5d1c"
_fold_cache: dict[tuple, bool] = {}


def needs_system_fold(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when the tokenizer's template rejects a system message or drops its text."""
    key = (tokenizer.chat_template, tokenizer.bos_token, tokenizer.eos_token)
    if key not in _fold_cache:
        probe = [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": "hi"}]
        try:
            _fold_cache[key] = _SYSTEM_PROBE not in _render(probe, tokenizer, add_generation_prompt=True)
        except BehavioError:
            raise
        except Exception:  # jinja2 TemplateError from raise_exception, or anything the template does
            _fold_cache[key] = True
    return _fold_cache[key]


def fold_system(messages: Sequence[Message]) -> list[Message]:
    """Merge a leading system message into the first user turn as ``"{system}\\n\\n{user}"``."""
    messages = [dict(m) for m in messages]
    if not messages or messages[0].get("role") != "system":
        return messages
    system, rest = messages[0], messages[1:]
    if any(m.get("role") == "system" for m in rest):
        raise BehavioError("only a leading system message can be folded into the first user turn")
    for m in rest:
        if m.get("role") == "user":
            m["content"] = f"{system['content']}\n\n{m['content']}" if system["content"] else m["content"]
            return rest
    return [{**system, "role": "user"}, *rest] if system["content"] else rest


def prepare_messages(
    messages: Sequence[Message], tokenizer: PreTrainedTokenizerBase, fold: Fold = "auto"
) -> list[Message]:
    """``messages`` ready for the template: control markers in the text neutralized (data must never
    forge a turn), and the system message folded when ``fold`` says so."""
    if fold == "auto":
        fold = needs_system_fold(tokenizer)
    specials = tuple(str(t) for t in getattr(tokenizer, "all_special_tokens", ()))
    clean = [{**m, "content": neutralize(m["content"], specials)} if isinstance(m.get("content"), str) else dict(m)
             for m in messages]
    return fold_system(clean) if fold else clean


# ---------------------------------------------------------------------------------------------
# Rendering and encoding
# ---------------------------------------------------------------------------------------------


def _render(messages: Sequence[Message], tokenizer: PreTrainedTokenizerBase, *, add_generation_prompt: bool) -> str:
    if not tokenizer.chat_template:
        raise BehavioError("the tokenizer has no chat template; set one (behavio.chat.load_chat_template)")
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def render_prompt(messages: Sequence[Message], tokenizer: PreTrainedTokenizerBase, fold: Fold = "auto") -> str:
    """The generation prompt for ``messages`` (ending with the assistant header), folded like training."""
    return _render(prepare_messages(messages, tokenizer, fold), tokenizer, add_generation_prompt=True)


def _wants_bos(text: str, tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when the tokenizer normally adds a BOS and the rendered text does not start with it."""
    bos = tokenizer.bos_token
    if not bos or text.startswith(bos):
        return False
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    special = tokenizer("a")["input_ids"]
    return len(special) > len(plain) and special[0] == tokenizer.bos_token_id


def encode_text(text: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of rendered chat text: the template's special tokens, plus a BOS only if it lacks one.

    Never doubles a BOS the template already wrote, never appends an EOS. For a prompt from
    :func:`render_prompt` with no earlier assistant turn this is exactly what training saw;
    :func:`encode_prompt` also covers multi-turn history.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.bos_token_id, *ids] if _wants_bos(text, tokenizer) else ids


class _Encoded(NamedTuple):
    ids: list[int]
    offsets: list[tuple[int, int]]  # character span of each token in the rendered text
    trained: list[bool]
    span_ends: list[int]  # index of the last token of each assistant span


def _encode_pieces(text: str, spans: Sequence[tuple[int, int]], tokenizer: PreTrainedTokenizerBase,
                   weights: Sequence[bool] | None = None) -> _Encoded:
    """Tokenize ``text`` cut at every assistant-span edge; the tokens of a span are the trained ones (of the spans
    whose entry in ``weights`` is true, when it is given).

    Cutting keeps each prompt tokenized exactly as it is alone at generation time: a header ending
    in whitespace (Llama-3's ``<|end_header_id|>\\n\\n``) would otherwise merge differently with the
    answer that follows it than with nothing.
    """
    if not tokenizer.is_fast:
        raise BehavioError("assistant-only masking needs a fast tokenizer (one with character offsets)")
    bos = [tokenizer.bos_token_id] if _wants_bos(text, tokenizer) else []
    out = _Encoded(bos, [(0, 0)] * len(bos), [False] * len(bos), [])
    edges = [0, *itertools.chain.from_iterable(spans), len(text)]
    for k, (start, end) in enumerate(zip(edges, edges[1:])):
        if end > start:
            piece = tokenizer(text[start:end], add_special_tokens=False, return_offsets_mapping=True)
            out.ids.extend(piece["input_ids"])
            out.offsets.extend((start + a, start + b) for a, b in piece["offset_mapping"])
            trained = k % 2 == 1 and (weights is None or weights[k // 2])
            out.trained.extend([trained] * len(piece["input_ids"]))
        if k % 2 == 1:
            out.span_ends.append(len(out.ids) - 1)
    return out


def encode_prompt(messages: Sequence[Message], tokenizer: PreTrainedTokenizerBase, fold: Fold = "auto") -> list[int]:
    """Token ids of the generation prompt for ``messages``, cut exactly as training cuts them.

    Equal to ``encode_text(render_prompt(...))`` when there is no earlier assistant turn.
    """
    messages = prepare_messages(messages, tokenizer, fold)
    prompt = _render(messages, tokenizer, add_generation_prompt=True)
    spans: list[tuple[int, int]] = []
    if any(m.get("role") == "assistant" for m in messages):
        history, spans = _assistant_spans(messages, tokenizer, "prompt")
        spans = spans if prompt.startswith(history) else []
    return _encode_pieces(prompt, spans, tokenizer).ids


# ---------------------------------------------------------------------------------------------
# Assistant spans
# ---------------------------------------------------------------------------------------------


def _find_content(text: str, content: str) -> tuple[int, int] | None:
    """The last span of ``text`` holding ``content`` as the template rendered it (some ``| trim`` it)."""
    for variant in dict.fromkeys([content, content.strip(), content.rstrip(), content.lstrip()]):
        at = text.rfind(variant) if variant else -1
        if at >= 0:
            return at, at + len(variant)
    return None


def _assistant_spans(
    messages: Sequence[Message], tokenizer: PreTrainedTokenizerBase, where: str
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each assistant turn (content + end marker)."""
    try:
        full = _render(messages, tokenizer, add_generation_prompt=False)
        spans: list[tuple[int, int]] = []
        for i, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            content = message.get("content") or ""
            head = _render(messages[:i], tokenizer, add_generation_prompt=True) if i else ""
            turn = _render(messages[: i + 1], tokenizer, add_generation_prompt=False)
            if turn.startswith(head) and full.startswith(turn):  # prefix-stable template (the usual case)
                start, text = len(head), turn[len(head):].rstrip()  # [template prefix] content end-marker
                found = _find_content(text, content) if content.strip() else (0, 0)
            else:  # a template that rewrites earlier turns: find this turn's text, in order
                text, start = turn.rstrip(), 0
                found = _find_content(text, content) if content.strip() else None
                if found:
                    text, found = text[found[0]:], (0, found[1] - found[0])
                    start = _find_in_order(full, messages[:i], text, spans, where)
            if found is None:
                raise BehavioError(f"{where}: could not locate assistant turn {len(spans) + 1} in the rendered chat")
            if not text[found[1]:].strip():
                raise BehavioError(
                    f"{where}: the chat template writes no end-of-turn marker after assistant messages, "
                    "so the model could never learn to stop"
                )
            spans.append((start, start + len(text)))
    except BehavioError:
        raise
    except Exception as exc:  # the template raised (bad roles, alternation...)
        raise BehavioError(f"{where}: the chat template rejected the conversation: {exc}") from None
    return full, spans


def _find_in_order(
    full: str, before: Sequence[Message], needle: str, spans: list[tuple[int, int]], where: str
) -> int:
    """Where ``needle`` (an assistant turn) starts in ``full``, searching after the preceding user turn."""
    cursor = spans[-1][1] if spans else 0
    if before and before[-1].get("role") == "user":
        user = (before[-1].get("content") or "").strip()
        at = full.find(user, cursor) if user else -1
        cursor = at + len(user) if at >= 0 else cursor
    at = full.find(needle, cursor)
    if at < 0:
        raise BehavioError(f"{where}: could not locate assistant turn {len(spans) + 1} in the rendered chat")
    return at


# ---------------------------------------------------------------------------------------------
# Tokenization with the assistant mask
# ---------------------------------------------------------------------------------------------


def trained_turns(messages: Sequence[Message], where: str) -> list[bool]:
    """Per assistant message: whether it is trained (``weight`` 1 or absent) or context (``weight`` 0)."""
    flags = []
    for message in messages:
        if message.get("role") != "assistant":
            continue
        weight = message.get("weight", 1)
        if weight not in (0, 1) or isinstance(weight, bool):
            raise BehavioError(f"{where}: assistant turn {len(flags) + 1} has weight {weight!r}; use 0 (context, not "
                               "trained) or 1")
        flags.append(weight == 1)
    return flags


def tokenize_with_assistant_mask(
    messages: Sequence[Message],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int | None,
    *,
    fold: Fold = "auto",
    example_id: str | None = None,
) -> dict[str, list[int]]:
    """Token ids and labels for SFT where only assistant turns (with their end-of-turn marker) train.

    Returns ``input_ids``, ``attention_mask``, ``labels`` (-100 off the assistant turns) and
    ``assistant_masks`` (1 on trained tokens). Truncates to ``max_length``; raises a
    :class:`BehavioError` naming the example when that cuts an assistant turn's end-of-turn marker or
    leaves nothing to train.
    """
    where = f"example {example_id}" if example_id else "example"
    messages = prepare_messages(messages, tokenizer, fold)
    text, spans = _assistant_spans(messages, tokenizer, where)
    encoded = _encode_pieces(text, spans, tokenizer, trained_turns(messages, where))
    ids, trained = encoded.ids, encoded.trained
    if max_length is not None and len(ids) > max_length:
        for turn, last in enumerate(encoded.span_ends, start=1):
            if last >= max_length:
                raise BehavioError(
                    f"{where}: max_length={max_length} cuts assistant turn {turn} before its end-of-turn "
                    f"marker ({len(ids)} tokens in all); raise max_length or shorten the example"
                )
        ids, trained = ids[:max_length], trained[:max_length]
    if not any(trained):
        raise BehavioError(f"{where}: no assistant tokens to train (no assistant message with text, or every one "
                           "has weight 0?)")
    return {
        "input_ids": ids,
        "attention_mask": [1] * len(ids),
        "labels": [i if t else IGNORE for i, t in zip(ids, trained)],
        "assistant_masks": [int(t) for t in trained],
    }


def describe_trained_tokens(
    messages: Sequence[Message],
    tokenizer: PreTrainedTokenizerBase,
    *,
    fold: Fold = "auto",
    max_length: int | None = None,
) -> list[Segment]:
    """The rendered conversation as runs of trained / untrained text, for ``behavio preview``.

    Text of tokens past ``max_length`` is returned untrained (it would be cut).
    """
    messages = prepare_messages(messages, tokenizer, fold)
    text, spans = _assistant_spans(messages, tokenizer, "example")
    encoded = _encode_pieces(text, spans, tokenizer, trained_turns(messages, "example"))
    flags = [False] * len(text)
    for k, ((start, end), trained) in enumerate(zip(encoded.offsets, encoded.trained)):
        if trained and (max_length is None or k < max_length):
            flags[start:end] = [True] * (end - start)
    segments, at = [], 0
    for flag, run in itertools.groupby(flags):
        size = len(list(run))
        segments.append(Segment(text[at : at + size], flag))
        at += size
    return segments
