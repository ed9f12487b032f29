"""Chat-template control markers that must never come from data.

A spec or a data file may contain text such as ``<|im_end|>`` or ``[INST]``.  Tokenized as is,
it would become a real control token and let data forge turns.  Compile warns about it, and
training and checking neutralize it: a zero-width space after the first character keeps the
text readable but stops it from matching the special token.
"""

from __future__ import annotations

import re

MARKERS = (
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|begin_of_text|>", "<|end_of_text|>", "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<s>", "</s>",
    "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
)
_ZWSP = "\u200b"


def _pattern(extra: tuple[str, ...] = ()) -> re.Pattern:
    tokens = sorted(set(MARKERS) | {t for t in extra if t and len(t) > 1}, key=len, reverse=True)
    return re.compile("|".join(re.escape(t) for t in tokens))


_DEFAULT = _pattern()


def find_markers(text: str) -> list[str]:
    """Control markers found in ``text`` (in order, with repeats)."""
    return _DEFAULT.findall(text)


def neutralize(text: str, special_tokens: tuple[str, ...] = ()) -> str:
    """``text`` with every control marker (and the tokenizer's own special tokens) broken up."""
    pattern = _pattern(special_tokens) if special_tokens else _DEFAULT
    return pattern.sub(lambda m: m.group(0)[0] + _ZWSP + m.group(0)[1:], text)
