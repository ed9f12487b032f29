"""Why does a trained model refuse (or answer) a probe? Its first answer token, read off the checkpoint.

A refusal is decided at the answer's first token: the fixed refusal opens with one token on every
refusal row, while answers open with many different words. This reads, for every probe a refusal rule
judges, the checkpoint's next-token distribution after the prompt (the chat template, adapter on, one
forward pass) and prints the refusal's first token's probability, whether it is the argmax and the
three likeliest tokens, beside the scorecard's verdict. A refusal that wins with a small share
("plurality") says the answer side's probability is split over many openings, not that the model is
sure it must refuse.

    python bench/openings.py specs/bookshop_persona.yaml --run /work/exp/runs-book2/bookshop-persona-...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from behavio.chat import encode_prompt  # noqa: E402
from behavio.compiler.build import compile_spec  # noqa: E402
from behavio.models.load import load_model, load_tokenizer  # noqa: E402


def refusal_cases(checks: bytes, split: str) -> list[tuple[dict, str, str]]:
    """(case, expect, refusal sentence) for every ``split`` case a refusal rule judges."""
    out = []
    for line in checks.decode().splitlines():
        case = json.loads(line)
        if case["split"] != split:
            continue
        for rule in case["rules"]:
            if rule["kind"] == "refusal":
                out.append((case, rule["args"]["expect"], rule["args"]["responses"][0]))
                break
    return out


def prompt_messages(case: dict) -> list[dict]:
    """The case's conversation up to the answer the model is asked for (a reference answer left off)."""
    messages = case["messages"]
    return messages[:-1] if messages[-1]["role"] == "assistant" else messages


def refusal_failures(scored: dict) -> set[str]:
    """Ids of the cases whose refusal verdict failed, from one checkpoint's entry of scorecard.json."""
    return {f["id"] for f in scored["failures"]
            if any(v["rule"].startswith("refusal:") and not v["passed"] for v in f["verdicts"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--run", type=Path, required=True, help="a finished run directory (holds scorecard.json)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint name (default: the scorecard's best)")
    parser.add_argument("--split", default="probe")
    args = parser.parse_args()

    from peft import PeftModel

    torch.set_num_threads(1)
    card = json.loads((args.run / "scorecard.json").read_text())
    name = args.checkpoint or card["best"]
    scored = next(c for c in card["checkpoints"] if c["checkpoint"] == name)
    failed = refusal_failures(scored)
    path = args.run / name
    tokenizer = load_tokenizer(path)
    model = PeftModel.from_pretrained(load_model(card["base_model"], quantization="none", device="cpu"), path).eval()
    cases = refusal_cases(compile_spec(args.spec).files["checks.jsonl"], args.split)

    print(f"{args.spec.name}, {name} ({args.split} split): the refusal's first token after each prompt\n")
    print("| refusal verdict | expect | p(refusal opening) | argmax | top 3 | prompt |\n|---|---|---|---|---|---|")
    tally = {"wrong refusals": 0, "won with p < 0.5": 0}
    for case, expect, sentence in cases:
        opening = tokenizer.encode(sentence, add_special_tokens=False)[0]
        messages = prompt_messages(case)
        ids = torch.tensor([encode_prompt(messages, tokenizer)])
        with torch.no_grad():
            probs = model(input_ids=ids).logits[0, -1].float().softmax(-1)
        top = probs.topk(3)
        wins = int(top.indices[0]) == opening
        verdict = "fail" if case["id"] in failed else "pass"
        if expect == "answer" and verdict == "fail":
            tally["wrong refusals"] += 1
            tally["won with p < 0.5"] += wins and float(probs[opening]) < 0.5
        tops = ", ".join(f"{tokenizer.decode([int(i)])!r} {float(p):.2f}" for p, i in zip(top.values, top.indices))
        prompt = messages[-1]["content"].replace("|", "/")[:70]
        print(f"| {verdict} | {expect} | {float(probs[opening]):.2f} | {'refusal' if wins else '-'} | {tops} | {prompt} |")
    print(f"\nwrongly refused: {tally['wrong refusals']}; of them the refusal's opening won with less than half "
          f"the probability: {tally['won with p < 0.5']}")


if __name__ == "__main__":
    main()
