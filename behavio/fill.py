"""Fill pending answer bodies (``answers: {source: model}``) with the base model's greedy answers.

Bodies are cached under ``$BEHAVIO_CACHE/answers/`` (default ``~/.cache/behavio/answers/``) by
(model content fingerprint, pending key, generation settings: tokens, fold, decoding, device, dtype,
quantization), so a second fill generates nothing and does not even load the model.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Callable

from behavio import pending
from behavio.generate import Generation, GenerationCache, generate_cached, generation_settings
from behavio.jsonio import read_jsonl, write_jsonl
from behavio.models import cache_root

ANSWER_MAX_NEW_TOKENS = 64
ANSWER_BATCH_SIZE = 32
FILLED_FILES = ("sft", "sft.val", "dpo", "dpo.val", "checks")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def tidy_body(gen: Generation, trim_unfinished: bool = True) -> str:
    """The body as the model wrote it, whitespace stripped, without the courtesy sentences it opens with when an
    answer follows them ("I'm sorry for any confusion. You can ..." trains "You can ...": see
    :mod:`behavio.kinds._pleasantries`); an answer cut by the token limit is trimmed back to its last complete
    sentence (when it has one), so training never shows a half sentence."""
    from behavio.kinds._pleasantries import without_leading_courtesy

    text = gen.text.strip()
    if not gen.finished and trim_unfinished:
        text = _last_complete_sentence_end(text)
    return without_leading_courtesy(text)


def _last_complete_sentence_end(text: str) -> str:
    """``text`` up to its last complete sentence (all of it when it has none). A list cut after its number
    ("Here's how it works:\n\n1.") ends before that number, and before the lead-in the list would have followed:
    trained on, "2. 1." would be the model's way to end steps, and "Here's how:" its way to end an answer."""
    from behavio.kinds._text import is_list_mark

    while ends := list(_SENTENCE_END.finditer(text)):
        cut = text[:ends[-1].end()].strip()
        last_line = cut.rpartition("\n")[2]
        if not is_list_mark(last_line):
            return cut
        text = cut[:len(cut) - len(last_line)].rstrip()
        if not text.endswith(":"):
            return text
    return text


def fill_pending(pending_rows: list[dict], base_model: str, *, max_new_tokens: int = ANSWER_MAX_NEW_TOKENS,
                 batch_size: int = ANSWER_BATCH_SIZE, trim_unfinished: bool = True, use_cache: bool = True,
                 quantization: str = "none", trust_remote_code: bool = False, device: str = "auto",
                 fold: bool | str = "auto", quiet: bool = False) -> dict[str, str]:
    """Answer bodies for ``pending_rows`` (``{"key", "messages", "shape"?}``) written by ``base_model``; key -> text.

    The model answers each conversation once (cached by its content key); a row with a ``shape`` gets the
    answer in the form its behaviors ask for (``Kind.shape_body``, e.g. a numbered list). A conversation whose
    earlier assistant turns are pending themselves is answered once those are (in rounds).

    ``device``, ``fold`` (the system message folded into the first user turn) and
    ``trust_remote_code`` are the run's own, so the bodies are the answers the trained model starts from.
    Under a launcher every process writes its share of the missing answers and all get every answer
    (the main process alone appends them to the cache).
    """
    from behavio.errors import BehavioError

    if not pending_rows:
        return {}
    cache, base = _answer_source(base_model, {}, max_new_tokens=max_new_tokens, use_cache=use_cache,
                                 quantization=quantization, trust_remote_code=trust_remote_code, device=device,
                                 fold=fold)

    def write(model, todo: dict[str, list[dict]]) -> dict[str, Generation]:
        return generate_cached(model.model, model.tokenizer, todo, cache, max_new_tokens=max_new_tokens,
                               batch_size=batch_size, fold=fold, label="writing answer bodies", quiet=quiet)[0]

    answers: dict[str, str] = {}
    todo = list(pending_rows)
    while todo:
        ready = [row for row in todo if set(pending.keys_in(*_texts(row["messages"]))) <= answers.keys()]
        if not ready:
            missing = sorted(set(pending.keys_in(*_texts(todo[0]["messages"]))) - answers.keys())
            raise BehavioError(f"pending answer {todo[0]['key']} answers a conversation whose earlier turn {missing[0]} "
                               "is not being written (compile the spec again)")
        answers.update(_answer_round(ready, answers, cache, base, write, trim_unfinished))
        todo = [row for row in todo if row["key"] not in answers]
    return answers


def refill_pending(pending_rows: list[dict], answers: dict[str, str], base_model: str, *, choice: int,
                   max_new_tokens: int = ANSWER_MAX_NEW_TOKENS, batch_size: int = ANSWER_BATCH_SIZE,
                   trim_unfinished: bool = True, use_cache: bool = True, quantization: str = "none",
                   trust_remote_code: bool = False, device: str = "auto",
                   fold: bool | str = "auto") -> dict[str, str]:
    """Answer bodies for ``pending_rows`` written again by ``base_model``: each opens with the token the base model
    ranks ``choice``-th for it (0 is its greedy answer's first token, 1 the next best, ...) and goes on greedily.

    The second opinion on an answer that broke its rules: the base model's own refusal ("I'm sorry for any
    misunderstanding, but as a travel agency, I'm unable ...") is decided at its first word, so the answer the model
    ranks next is usually a real one. ``answers`` fills the conversations' earlier turns; cached like the fill.
    """
    if not pending_rows:
        return {}
    cache, base = _answer_source(base_model, {"opening_choice": choice}, max_new_tokens=max_new_tokens,
                                 use_cache=use_cache, quantization=quantization, trust_remote_code=trust_remote_code,
                                 device=device, fold=fold)

    def write(model, todo: dict[str, list[dict]]) -> dict[str, Generation]:
        gens = _opening_choice(model.model, model.tokenizer, todo, choice=choice, max_new_tokens=max_new_tokens,
                               batch_size=batch_size, fold=fold)
        cache.put(gens)
        return gens

    return _answer_round(pending_rows, answers, cache, base, write, trim_unfinished)


def _answer_source(base_model: str, extra_settings: dict, *, max_new_tokens: int, use_cache: bool, quantization: str,
                   trust_remote_code: bool, device: str, fold: bool | str) -> tuple[GenerationCache, Callable]:
    """The answer cache for these settings (plus ``extra_settings``, part of its key) and the base model, loaded the
    first time this process has answers to write."""
    from behavio.models import load_base, load_settings, model_fingerprint, resolve_base_model

    path = resolve_base_model(base_model)
    settings = {**generation_settings("answers", max_new_tokens=max_new_tokens, fold=fold,
                                      load=load_settings(quantization, device)), **extra_settings}
    cache = GenerationCache(cache_root() / "answers", model_fingerprint(path), settings, enabled=use_cache)
    base = functools.cache(lambda: load_base(path, quantization=quantization, trust_remote_code=trust_remote_code,
                                             device=device))
    return cache, base


def _answer_round(rows: list[dict], answers: dict[str, str], cache: GenerationCache, base, write,
                  trim_unfinished: bool) -> dict[str, str]:
    """Bodies for ``rows`` (their earlier turns filled from ``answers``), written by ``write`` where the cache has
    none, tidied and put in the form their behaviors ask for; key -> text."""
    asked = {row["key"]: pending.fill_value(row["messages"], answers, row["key"]) for row in rows}
    content_keys = {key: pending.key_for(messages) for key, messages in asked.items()}
    gens = _write_round({content_keys[key]: messages for key, messages in asked.items()}, cache, base, write)
    return {row["key"]: _shaped(tidy_body(gens[content_keys[row["key"]]], trim_unfinished), row.get("shape"))
            for row in rows}


def _opening_choice(model, tokenizer, items: dict[str, list[dict]], *, choice: int, max_new_tokens: int,
                    batch_size: int, fold: bool | str) -> dict[str, Generation]:
    """Greedy answers to ``items`` whose first token is the model's ``choice``-th ranked one (0: plain greedy)."""
    import torch

    from behavio.decode import Row, decode
    from behavio.generate import encode_conversation, stop_token_ids

    stops = stop_token_ids(tokenizer, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    keys = list(items)
    starts: dict[str, list[int]] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for key in keys:
                prompt = encode_conversation(items[key], tokenizer, fold)
                logits = model(input_ids=torch.tensor([prompt], device=model.device)).logits[0, -1].float()
                first = int(torch.topk(logits, choice + 1).indices[choice])
                starts[key] = [*prompt, first]
        going = [k for k in keys if starts[k][-1] not in stops and max_new_tokens > 1]
        decoded = decode(model, [Row(starts[k]) for k in going], max_new_tokens=max_new_tokens - 1, stop_ids=stops,
                         pad_id=pad, batch_size=batch_size) if going else []
    finally:
        model.train(was_training)
    rest = dict(zip(going, decoded))
    out = {}
    for key in keys:
        first = starts[key][-1]
        if first in stops:  # the choice is to stop at once: an empty answer, which the proof drops
            out[key] = Generation("", True)
        elif key not in rest:  # one token is all the limit allows
            out[key] = Generation(tokenizer.decode([first], skip_special_tokens=True).strip(), False)
        else:
            tail = rest[key]
            out[key] = Generation(tokenizer.decode([first, *tail.tokens], skip_special_tokens=True).strip(), tail.finished)
    return out


def _write_round(items: dict[str, list[dict]], cache: GenerationCache, base,
                 write: Callable[[object, dict[str, list[dict]]], dict[str, Generation]]) -> dict[str, Generation]:
    """Every conversation of ``items`` answered (from the cache when it can be; ``write(base model, missing)`` writes
    the rest and puts them in ``cache``). Under a launcher every process writes its share of the missing answers and
    all get every answer (the main process alone appends them to the cache)."""
    from behavio import distributed

    missing = distributed.broadcast([k for k in items if cache.get(k) is None])  # the main process's view
    if missing:
        mine = distributed.share(missing)
        enabled, cache.enabled = cache.enabled, cache.enabled and distributed.is_main()
        written: dict[str, Generation] = {}
        if mine:
            gens = write(base(), {k: items[k] for k in mine})
            written = {k: gens[k] for k in mine}
        for rank, part in enumerate(distributed.gather(written) if distributed.size() > 1 else []):
            if rank != distributed.rank():  # this process's own answers are in the cache already
                cache.put(part)
        cache.enabled = enabled
    return distributed.broadcast({k: cache.get(k) for k in items})


def _texts(messages: list[dict]) -> list[str]:
    return [m.get("content") or "" for m in messages]


def _shaped(text: str, shape: list[dict] | None) -> str:
    """``text`` put in the form of every behavior in ``shape`` (``{"behavior", "kind", "args"}``), in order; an entry
    with a ``violation`` breaks that form (a DPO rejection the base model's answer is turned into), from the body
    as the model wrote it when the entry says ``undo`` (that behavior's own shape is then skipped)."""
    from behavio import kinds
    from behavio.spec.model import Behavior

    undone = {entry["behavior"] for entry in shape or [] if entry.get("undo")}
    for entry in shape or []:
        if "violation" not in entry and entry["behavior"] in undone:
            continue  # a rejection made from the body before this behavior shaped it
        behavior = Behavior(id=entry["behavior"], kind=entry["kind"], index=-1, raw=entry["args"])
        kind = kinds.get(entry["kind"])
        if "violation" in entry:
            text = kind.violate_body(behavior, text, entry["violation"])
            text = text if text is not None else ""  # cannot be broken so: an empty rejection, dropped by the proof
        else:
            text = kind.shape_body(behavior, text)
    return text


def run_fill_settings(cfg) -> dict:
    """``fill_pending`` keyword arguments from a run's TrainConfig: its tokens, batch, device, fold and trust."""
    return {"max_new_tokens": cfg.fill_max_new_tokens, "batch_size": cfg.fill_batch_size,
            "quantization": cfg.quantization, "trust_remote_code": cfg.trust_remote_code, "device": cfg.device,
            "fold": cfg.fold_system}


def fill_rows(rows: list[dict], answers: dict[str, str]) -> list[dict]:
    """Copies of ``rows`` with every pending marker (in any message, reference, chosen/rejected) replaced
    and ``pending`` emptied; BehavioError naming the row if an answer is missing."""
    out = []
    for row in rows:
        filled = {k: v if k == "pending" else pending.fill_value(v, answers, f"row {row.get('id', '?')}") for k, v in row.items()}
        if "pending" in row:
            filled["pending"] = []
        out.append(filled)
    return out


def fill_compiled_dir(directory: str | Path, base_model: str = "default", *,
                      max_new_tokens: int = ANSWER_MAX_NEW_TOKENS, batch_size: int = ANSWER_BATCH_SIZE,
                      quiet: bool = False, **kwargs) -> Path:
    """Write ``directory/filled/{sft,sft.val,dpo,dpo.val,checks}.jsonl`` with every pending body filled."""
    directory = Path(directory)
    waiting = read_jsonl(directory / "pending.jsonl", hint="run `behavio compile` first")
    answers = fill_pending(waiting, base_model, max_new_tokens=max_new_tokens, batch_size=batch_size, quiet=quiet, **kwargs)
    target = directory / "filled"
    target.mkdir(exist_ok=True)
    for name in FILLED_FILES:
        rows = read_jsonl(directory / f"{name}.jsonl", hint="run `behavio compile` first")
        write_jsonl(target / f"{name}.jsonl", fill_rows(rows, answers))
    return target
