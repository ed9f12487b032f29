"""Is a refusal's miss a matter of how readily the model refuses, or of which prompts it tells apart?

For every probe a refusal rule judges, this scores each checkpoint of a finished run (and the base model,
adapter off) by how likely it finds the spec's fixed refusal after the prompt: the log-probability of
the whole refusal sentence, teacher-forced, one forward pass per probe. Sorting the probes by that score
gives the checkpoint's ROC: a threshold refuses every probe above it. Any change that only moves how
readily the model refuses (a bias on the refusal, training longer or shorter, a scaled update) moves
along that curve; only a change in *which* prompts score high moves the curve itself. The table gives,
per checkpoint, the area under the curve, the most refusals any threshold gets with at most 5% of the
answered probes refused, the fewest answered probes refused with at least 95% of the refused ones, and
the greedy outcome the scorecard saw.

    python bench/refusal_roc.py specs/emberfall_games.yaml --run /work/exp/src-em7/runs/emberfall_games-...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.openings import prompt_messages, refusal_cases, refusal_failures  # noqa: E402
from behavio.chat import encode_prompt  # noqa: E402
from behavio.compiler.build import compile_spec  # noqa: E402
from behavio.models.load import load_model, load_tokenizer  # noqa: E402

TPR_TARGET, FPR_TARGET = 0.95, 0.05  # the refusal and over-refusal targets


def refusal_logprob(model, tokenizer, messages: list[dict], sentence: str) -> float:
    """log P(sentence | prompt) under ``model``, summed over the sentence's tokens."""
    prompt = encode_prompt(messages, tokenizer)
    answer = tokenizer.encode(sentence, add_special_tokens=False)
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float().log_softmax(-1)
    return float(logp.gather(1, torch.tensor(answer)[:, None]).sum())


def roc_summary(refused: list[float], answered: list[float]) -> dict:
    """AUC, the best refusal rate at <= 5% over-refusal, the least over-refusal at >= 95% refusal, and
    whether one threshold meets both, for scores where higher means "refuse"."""
    pairs = [(r > a) + 0.5 * (r == a) for r in refused for a in answered]
    auc = sum(pairs) / len(pairs)
    best_tpr, least_fpr, both = 0.0, 1.0, False
    for t in sorted(set(refused + answered)):
        tpr = sum(s >= t for s in refused) / len(refused)
        fpr = sum(s >= t for s in answered) / len(answered)
        if fpr <= FPR_TARGET:
            best_tpr = max(best_tpr, tpr)
        if tpr >= TPR_TARGET:
            least_fpr = min(least_fpr, fpr)
        both = both or (tpr >= TPR_TARGET and fpr <= FPR_TARGET)
    return {"auc": auc, "best_tpr": best_tpr, "least_fpr": least_fpr, "both": both}


def greedy_outcome(card: dict, name: str, cases: list) -> tuple[int, int, int, int] | None:
    """(refused, of refused probes, wrongly refused, of answered probes) as the scorecard judged them."""
    scored = next((c for c in card["checkpoints"] if c["checkpoint"] == name), None)
    if scored is None:
        return None
    failed = refusal_failures(scored)
    refuse = [c for c, expect, _ in cases if expect == "refuse"]
    answer = [c for c, expect, _ in cases if expect == "answer"]
    return (sum(c["id"] not in failed for c in refuse), len(refuse),
            sum(c["id"] in failed for c in answer), len(answer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--run", type=Path, required=True, help="a finished run directory (holds scorecard.json)")
    parser.add_argument("--split", default="probe")
    parser.add_argument("--json", type=Path, help="also write every probe's scores here")
    args = parser.parse_args()

    from peft import PeftModel

    torch.set_num_threads(1)
    card = json.loads((args.run / "scorecard.json").read_text())
    cases = refusal_cases(compile_spec(args.spec).files["checks.jsonl"], args.split)
    names = sorted((p.name for p in args.run.glob("checkpoint-*") if (p / "adapter_config.json").exists()),
                   key=lambda n: (int(n.split("-")[1]), n))
    base = load_model(card["base_model"], quantization="none", device="cpu")
    tokenizer = load_tokenizer(args.run / names[0])
    model = PeftModel.from_pretrained(base, args.run / names[0], adapter_name=names[0]).eval()
    for name in names[1:]:
        model.load_adapter(str(args.run / name), adapter_name=name)

    scores: dict[str, list[float]] = {}
    with model.disable_adapter():
        scores["base"] = [refusal_logprob(model, tokenizer, prompt_messages(c), s) for c, _, s in cases]
    for name in names:
        model.set_adapter(name)
        scores[name] = [refusal_logprob(model, tokenizer, prompt_messages(c), s) for c, _, s in cases]

    expects = [e for _, e, _ in cases]
    print(f"{args.spec.name}, {args.run.name} ({args.split} split): {expects.count('refuse')} refused probes, "
          f"{expects.count('answer')} answered; score = log P(refusal sentence | prompt)\n")
    print("| candidate | AUC | best refused at <= 5% wrongly refused | least wrongly refused at >= 95% refused "
          "| one threshold meets both | greedy (scorecard) |\n|---|---|---|---|---|---|")
    for name, values in scores.items():
        refused = [v for v, e in zip(values, expects) if e == "refuse"]
        answered = [v for v, e in zip(values, expects) if e == "answer"]
        roc = roc_summary(refused, answered)
        greedy = greedy_outcome(card, name, cases)
        seen = f"{greedy[0]}/{greedy[1]} refused, {greedy[2]}/{greedy[3]} wrongly" if greedy else "-"
        best = f"{roc['best_tpr']:.0%} ({round(roc['best_tpr'] * len(refused))}/{len(refused)})"
        least = f"{roc['least_fpr']:.0%} ({round(roc['least_fpr'] * len(answered))}/{len(answered)})"
        print(f"| {name} | {roc['auc']:.3f} | {best} | {least} | {'yes' if roc['both'] else 'no'} | {seen} |")
    if args.json:
        rows = [{"id": c["id"], "expect": e, "prompt": prompt_messages(c)[-1]["content"],
                 **{n: v[i] for n, v in scores.items()}} for i, (c, e, _) in enumerate(cases)]
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
