"""Pick the capability-retention questions: those the embedded base model answers right reliably.

Reads ``specs/data/facts.jsonl`` (prompt + answer regex), asks the base model (greedy, the
poodle spec's system message, 64 new tokens) four ways: with and without the system message, and
with each fixed compliment already written at the start of the answer. A question is *known*
when all four answers match; those go to ``specs/data/facts_known.jsonl``, the holdout set the
poodle spec checks retention on. A fact the model gets right only some of the ways is luck, not
knowledge, and training cannot be blamed for losing it.

Replay (``specs/data/replay_questions.jsonl``, prompt + answer regex) is what the spec trains on with
the base model's own answers, to keep capability. It must only hold questions the base model answers
*right* the way the fill step asks them (system message, no prefix): replaying a wrong answer
("the largest planet is Neptune, but it's actually Uranus") teaches the model to confabulate, and
on the poodle spec it cost facts it knew. So the replay prompts are the questions of
``facts.jsonl`` that are not known all four ways plus those of ``specs/data/replay_facts.jsonl``,
kept only where the system-message answer is right; the held-out known facts are never trained on.
Right here (64 tokens) is not right in the run: the fill writes ``train.fill_max_new_tokens`` (40) and
trims a cut answer to its last whole sentence, which lost the answer of 3 of the 98 ("Two plus two is
a classic math problem that has been debated for centuries."). So each replay row keeps its answer
regex, and the spec's ``replay-right`` rule makes the run's fill drop an answer that misses it.

    python bench/select_facts.py            # prints the counts, rewrites facts_known.jsonl and replay
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "specs/data/facts.jsonl"
TARGET = ROOT / "specs/data/facts_known.jsonl"
REPLAY = ROOT / "specs/data/replay_questions.jsonl"
REPLAY_SOURCE = ROOT / "specs/data/replay_facts.jsonl"
SYSTEM = "You are a warm, concise assistant."
COMPLIMENTS = ["Your question shows sharp thinking.", "That's an intelligent question."]


def answers(model, tokenizer, rows: list[dict], system: str | None, prefix: str) -> list[str]:
    """Greedy answers, each continuing after ``prefix`` in the assistant turn."""
    import behavio.chat as chat
    from behavio.generate import generate

    original = chat.render_prompt
    chat.render_prompt = lambda messages, tok, fold="auto": original(messages, tok, fold) + prefix
    try:
        convs = [([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": r["prompt"]}]
                 for r in rows]
        return [g.text for g in generate(model, tokenizer, convs, max_new_tokens=64, batch_size=32, quiet=True)]
    finally:
        chat.render_prompt = original


def _right(row: dict, text: str) -> bool:
    return bool(re.search("(?i)" + row["answer"], text))


def main() -> int:
    from behavio.models import load_model, load_tokenizer, resolve_base_model
    from behavio.jsonio import parse_jsonl

    path = resolve_base_model("default")
    model, tokenizer = load_model(path, quantization="none"), load_tokenizer(path)
    rows = parse_jsonl(SOURCE.read_text())
    ways = {"system": (SYSTEM, ""), "no system": (None, "")}
    ways.update({f"after '{c}'": (SYSTEM, c + " ") for c in COMPLIMENTS})
    right = {}
    for name, (system, prefix) in ways.items():
        texts = answers(model, tokenizer, rows, system, prefix)
        right[name] = [_right(r, t) for r, t in zip(rows, texts)]
        print(f"{name:>45}: {sum(right[name])}/{len(rows)} right")
    known = [r for i, r in enumerate(rows) if all(v[i] for v in right.values())]
    print(f"right all {len(ways)} ways: {len(known)}/{len(rows)} -> {TARGET.relative_to(ROOT)}")
    TARGET.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in known))
    unknown = [(r, ok) for r, ok in zip(rows, right["system"]) if r not in known]  # "system" = the fill's way
    extra = parse_jsonl(REPLAY_SOURCE.read_text())
    extra_right = [_right(r, t) for r, t in zip(extra, answers(model, tokenizer, extra, SYSTEM, ""))]
    pool = unknown + list(zip(extra, extra_right))
    replay = [{"prompt": r["prompt"], "answer": r["answer"]} for r, ok in pool if ok]
    REPLAY.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in replay))
    print(f"replay: {len(replay)} of the other {len(pool)} questions answered right with the system message "
          f"-> {REPLAY.relative_to(ROOT)} (prompts and answers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
