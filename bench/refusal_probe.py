"""Is a refusal's ranking already in the frozen base model? A linear probe on its hidden states.

refusal_roc.py shows whether a checkpoint ranks the refused probes above the answered ones. This asks
the question beneath it: could *any* training of this base model on this spec rank them, as far as a
linear read of the model's own features can tell? It fits a logistic regression on the frozen base
model's hidden state at the last prompt position (the one that chooses the answer's first token) of
every compiled SFT training prompt, labelled by whether the row's refusal rule expects a refusal. The
layer and the L2 weight are chosen by cross-validation over the training prompts, grouped by prompt
set; the hand-written probes play no part in the choice. Then it scores the probes: AUC, the best
refusal rate at <= 5% wrongly refused, and whether one threshold meets both targets (as refusal_roc.py).
The same for the embedding model's sentence vectors of the user turn. The *oracle* column adds half
the probes to the training rows (two folds, each half scored by the probe fitted on the other): would
natural phrasings of the probes' own kind, had the spec had them, separate the rest?

    python bench/refusal_probe.py specs/emberfall_games.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.openings import prompt_messages, refusal_cases  # noqa: E402
from bench.refusal_roc import roc_summary  # noqa: E402
from behavio.chat import encode_prompt  # noqa: E402
from behavio.compiler.build import compile_spec  # noqa: E402

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
FOLDS = 4


def training_rows(sft: bytes) -> tuple[list[list[dict]], list[int], list[str]]:
    """(prompt messages, 1 if the row's refusal rule expects a refusal else 0, prompt set) per distinct prompt."""
    seen, prompts, labels, groups = set(), [], [], []
    for line in sft.decode().splitlines():
        row = json.loads(line)
        messages = prompt_messages(row)
        key = json.dumps(messages, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        refuse = any(r["kind"] == "refusal" and r["args"]["expect"] == "refuse" for r in row["rules"])
        prompts.append(messages)
        labels.append(int(refuse))
        groups.append(row["prompt_set"])
    return prompts, labels, groups


def grouped_folds(groups: list[str], k: int) -> list[list[int]]:
    """Row indices in ``k`` folds, every prompt set whole in one fold (sets dealt round-robin by size)."""
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    fold_of = {g: i % k for i, g in enumerate(sorted(sizes, key=lambda g: (-sizes[g], g)))}
    return [[i for i, g in enumerate(groups) if fold_of[g] == f] for f in range(k)]


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float):
    """A standardized L2-regularized logistic regression; returns a function scoring new rows."""
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    w = torch.zeros(z.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y.float()) + l2 * (w @ w) / 2
        loss.backward()
        return loss

    optimizer.step(closure)
    w, b = w.detach(), b.detach()
    return lambda new: ((new - mean) / std) @ w + b


def auc(scores: torch.Tensor, labels: list[int]) -> float:
    refused = [float(s) for s, y in zip(scores, labels) if y]
    answered = [float(s) for s, y in zip(scores, labels) if not y]
    return roc_summary(refused, answered)["auc"]


def choose(features: dict[str, torch.Tensor], labels: list[int], groups: list[str]) -> tuple[str, float, float]:
    """(feature name, L2 weight, cross-validated AUC) with the best mean AUC over folds held out by prompt set."""
    y = torch.tensor(labels)
    folds = grouped_folds(groups, FOLDS)
    best = ("", 0.0, -1.0)
    for name, x in features.items():
        for l2 in L2_GRID:
            scores = []
            for held in folds:
                held_set = set(held)
                train = [i for i in range(len(labels)) if i not in held_set]
                if len({labels[i] for i in held}) < 2:
                    continue
                score = fit_logistic(x[train], y[train], l2)(x[held])
                scores.append(auc(score, [labels[i] for i in held]))
            mean = sum(scores) / len(scores)
            if mean > best[2]:
                best = (name, l2, mean)
    return best


def oracle_scores(x_train, y_train, x_probe, probe_labels: list[int], l2: float) -> torch.Tensor:
    """Each half of the probes scored by a probe fitted on the training rows plus the other half."""
    halves = [[], []]
    for label in (0, 1):
        for n, i in enumerate(i for i, y in enumerate(probe_labels) if y == label):
            halves[n % 2].append(i)
    y_probe = torch.tensor(probe_labels)
    scores = torch.zeros(len(probe_labels))
    for held, other in ((halves[0], halves[1]), (halves[1], halves[0])):
        x = torch.cat([x_train, x_probe[other]])
        y = torch.cat([y_train, y_probe[other]])
        scores[held] = fit_logistic(x, y, l2)(x_probe[held])
    return scores


def hidden_states(model, tokenizer, prompts: list[list[dict]], layers: list[int]) -> dict[str, torch.Tensor]:
    """The hidden state at each prompt's last position, per layer: {"layer N": [rows, hidden]}."""
    rows = []
    with torch.no_grad():
        for messages in prompts:
            ids = torch.tensor([encode_prompt(messages, tokenizer)])
            out = model(input_ids=ids, output_hidden_states=True)
            rows.append(torch.stack([out.hidden_states[n][0, -1].float() for n in layers]))
    stacked = torch.stack(rows)
    return {f"layer {n}": stacked[:, i] for i, n in enumerate(layers)}


def sentence_vectors(prompts: list[list[dict]]) -> torch.Tensor:
    """The embedding model's vector of each prompt's last user turn."""
    from behavio import embeddings

    if not embeddings.available():
        raise SystemExit(f"the embedding model is not installed: {embeddings.fallback_reason()}")
    return torch.tensor(embeddings.embed([m[-1]["content"] for m in prompts]))


def report(name: str, features: dict[str, torch.Tensor], train, probes) -> str:
    """A table row: the cross-validated choice of layer and L2, scored on the probes, alone and as the oracle."""
    prompts, labels, groups = train
    probe_labels = probes[1]
    chosen, l2, cv = choose({k: v[: len(prompts)] for k, v in features.items()}, labels, groups)
    x = features[chosen]
    x_train, x_probe = x[: len(prompts)], x[len(prompts):]
    y_train = torch.tensor(labels)
    scores = fit_logistic(x_train, y_train, l2)(x_probe)
    oracle = oracle_scores(x_train, y_train, x_probe, probe_labels, l2)
    return f"| {name} ({chosen}, L2 {l2:g}) | {cv:.3f} | {_cells(scores, oracle, probe_labels)} |"


def upper_bound(name: str, features: dict[str, torch.Tensor], train, probes) -> str:
    """The best probe AUC of every layer and L2 weight, chosen *on the probes*: what no fair choice can beat.
    Ties are broken by the oracle's AUC, which is fitted only for the tied settings."""
    n, labels = len(train[0]), torch.tensor(train[1])
    probe_labels = probes[1]
    fitted = [(auc(scores, probe_labels), key, l2, scores)
              for key, x in features.items() for l2 in L2_GRID
              for scores in [fit_logistic(x[:n], labels, l2)(x[n:])]]
    top = max(a for a, *_ in fitted)
    best = None
    for _, key, l2, scores in (f for f in fitted if f[0] == top):
        x = features[key]
        oracle = oracle_scores(x[:n], labels, x[n:], probe_labels, l2)
        if best is None or auc(oracle, probe_labels) > best[0]:
            best = (auc(oracle, probe_labels), key, l2, scores, oracle)
    _, key, l2, scores, oracle = best
    return f"| {name}: best on the probes ({key}, L2 {l2:g}; optimistic) | - | {_cells(scores, oracle, probe_labels)} |"


def _cells(scores: torch.Tensor, oracle: torch.Tensor, probe_labels: list[int]) -> str:
    cells = []
    for s in (scores, oracle):
        refused = [float(v) for v, y in zip(s, probe_labels) if y]
        answered = [float(v) for v, y in zip(s, probe_labels) if not y]
        roc = roc_summary(refused, answered)
        cells.append(f"{roc['auc']:.3f} | {round(roc['best_tpr'] * len(refused))}/{len(refused)} | "
                     f"{round(roc['least_fpr'] * len(answered))}/{len(answered)} | {'yes' if roc['both'] else 'no'}")
    return " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--base-model", default="default", help="default: the embedded default model")
    parser.add_argument("--every", type=int, default=3, help="try every Nth layer (and the last)")
    args = parser.parse_args()

    from behavio.models.load import load_model, load_tokenizer
    from behavio.models.resolve import resolve_base_model

    torch.set_num_threads(1)
    compiled = compile_spec(args.spec)
    train = training_rows(compiled.files["sft.jsonl"])
    cases = refusal_cases(compiled.files["checks.jsonl"], "probe")
    probe_prompts = [prompt_messages(c) for c, _, _ in cases]
    probe_labels = [int(e == "refuse") for _, e, _ in cases]
    if not any(probe_labels) or all(probe_labels) or not any(train[1]):
        raise SystemExit(f"{args.spec}: needs refused and answered probes of a refusal rule, and refused training rows")
    base = resolve_base_model(args.base_model)
    model = load_model(base, quantization="none", device="cpu").eval()
    tokenizer = load_tokenizer(base)
    depth = model.config.num_hidden_layers
    layers = sorted(set(range(0, depth + 1, args.every)) | {depth})
    everything = train[0] + probe_prompts

    print(f"{args.spec.name}: {len(train[0])} distinct training prompts ({sum(train[1])} refused), "
          f"{len(probe_prompts)} probes ({sum(probe_labels)} refused); probe = logistic regression, layer and "
          f"L2 chosen by {FOLDS}-fold cross-validation over the training prompts grouped by prompt set\n")
    print("| features | CV AUC (training prompts) | probe AUC | best refused at <= 5% wrongly refused | "
          "least wrongly refused at >= 95% refused | both | oracle AUC | oracle best refused | "
          "oracle least wrongly refused | oracle both |\n|---|---|---|---|---|---|---|---|---|---|")
    probes = (probe_prompts, probe_labels)
    for name, features in (("base model hidden state", hidden_states(model, tokenizer, everything, layers)),
                           ("all-MiniLM-L6-v2 sentence vector", {"user turn": sentence_vectors(everything)})):
        print(report(name, features, train, probes))
        print(upper_bound(name, features, train, probes))


if __name__ == "__main__":
    main()
