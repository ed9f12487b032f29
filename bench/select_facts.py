"""Pick the capability-retention questions: those the embedded base model answers right reliably.

Reads ``specs/data/facts.jsonl`` (prompt + answer regex), asks the base model (greedy, the
poodle spec's system message, 64 new tokens) four ways: with and without the system message, and
with each fixed compliment already written at the start of the answer. A question is *known*
when all four answers match; those go to ``specs/data/facts_known.jsonl``, the holdout set the
poodle spec checks retention on. A fact the model gets right only some of the ways is luck, not
knowledge, and training cannot be blamed for losing it. The other questions go to
``specs/data/replay_questions.jsonl`` (prompts only): the spec trains on the base model's own
answers to them (replay), so the held-out known facts are never trained on.

    python bench/select_facts.py            # prints the counts, rewrites facts_known.jsonl
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


def main() -> int:
    from behavio.models import load_model, load_tokenizer, resolve_base_model

    path = resolve_base_model("default")
    model, tokenizer = load_model(path, quantization="none"), load_tokenizer(path)
    rows = [json.loads(line) for line in SOURCE.read_text().splitlines() if line.strip()]
    ways = {"system": (SYSTEM, ""), "no system": (None, "")}
    ways.update({f"after '{c}'": (SYSTEM, c + " ") for c in COMPLIMENTS})
    right = {}
    for name, (system, prefix) in ways.items():
        texts = answers(model, tokenizer, rows, system, prefix)
        right[name] = [bool(re.search("(?i)" + r["answer"], t)) for r, t in zip(rows, texts)]
        print(f"{name:>45}: {sum(right[name])}/{len(rows)} right")
    known = [r for i, r in enumerate(rows) if all(v[i] for v in right.values())]
    print(f"right all {len(ways)} ways: {len(known)}/{len(rows)} -> {TARGET.relative_to(ROOT)}")
    TARGET.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in known))
    rest = [{"prompt": r["prompt"]} for r in rows if r not in known]
    REPLAY.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rest))
    print(f"the other {len(rest)} -> {REPLAY.relative_to(ROOT)} (replay prompts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
