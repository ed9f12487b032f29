"""How does the base model answer after a sentence it did not choose? A spec's held-out facts, bare and opened.

A spec that opens answers with a fixed sentence (a compliment, a prefix) trains the model to write it, then the
body. This asks the base model (no adapter) the check split's questions of one prompt set three ways -- the bare
question, and with its answer made to start with each opening sentence of the spec's prefix behaviors (tokenized as
training tokenizes the whole answer) -- and scores the set's `regex` rules on what it writes after that. It is the
ceiling the anchor's teacher sets when it reads the answer as trained (``train.anchor_without_opening`` reads the
body without the opening instead).

    python bench/opening_facts.py specs/poodle_compliments.yaml --set facts

Prints, per way of asking, the passes and the failing answers.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from behavio.chat import encode_text, render_prompt  # noqa: E402
from behavio.compiler.build import compile_spec  # noqa: E402
from behavio.decode import Row  # noqa: E402
from behavio.generate import generate_rows  # noqa: E402
from behavio.jsonio import parse_jsonl  # noqa: E402
from behavio.models import resolve_base_model  # noqa: E402
from behavio.models.load import load_base  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--set", default="facts", help="prompt set whose check cases are asked (default: facts)")
    parser.add_argument("--base-model", default="default")
    parser.add_argument("--max-new-tokens", type=int, default=80)
    args = parser.parse_args()

    compiled = compile_spec(args.spec)
    cases = [c for c in parse_jsonl(compiled.files["checks.jsonl"])
             if c["split"] == "check" and c["prompt_set"] == args.set]
    patterns = [[r["args"]["pattern"] for r in c["rules"] if r["kind"] == "regex"] for c in cases]
    if not cases or not all(patterns):
        raise SystemExit(f"no check cases of set {args.set!r} with a regex rule in {args.spec}")
    openings = sorted({choice for b in compiled.spec.behaviors if b.kind in ("prefix", "header")
                       for choice in b.raw.get("choices", [])})
    base = load_base(resolve_base_model(args.base_model), quantization="none", device="cpu")
    print(f"{args.spec}: {len(cases)} check cases of set {args.set!r}, base model {args.base_model}, greedy, "
          f"{args.max_new_tokens} tokens")
    for opening in ["", *openings]:
        rows = [Row(encode_text(render_prompt(c["messages"], base.tokenizer) + opening, base.tokenizer)) for c in cases]
        answers = generate_rows(base.model, base.tokenizer, rows, max_new_tokens=args.max_new_tokens, batch_size=16,
                                quiet=True)
        failed = [(c, a.text) for c, p, a in zip(cases, patterns, answers)
                  if not all(re.search(x, a.text) for x in p)]
        print(f"\n{'bare question' if not opening else 'after ' + repr(opening)}: "
              f"{len(cases) - len(failed)}/{len(cases)}")
        for case, text in failed:
            print(f"  {case['messages'][-1]['content'][:60]!r} -> {' '.join(text.split())[:100]!r}")


if __name__ == "__main__":
    main()
