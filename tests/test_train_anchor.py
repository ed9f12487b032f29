"""Anchored SFT (``anchor > 0``): the KL term on the tokens the base model already predicts, on
literal logits and on the tiny model (it keeps the trained model closer to the base model's own
answers than plain SFT does, and trains only the adapter)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from behavio.train.anchor import anchored_losses, kept_positions


def test_kept_positions_are_those_whose_next_token_is_trained():
    labels = torch.tensor([[-100, -100, 5, 6, -100, 7],
                           [-100, 3, -100, -100, -100, -100]])
    assert kept_positions(labels).tolist() == [0, 1, 2, 4]


def _logits(*rows):
    return torch.tensor([rows], dtype=torch.float32)


def test_anchor_is_zero_when_the_model_still_answers_like_the_base():
    teacher = _logits([4.0, 1.0, 0.0], [0.0, 3.0, 1.0])
    parts = anchored_losses(teacher.clone(), teacher, torch.tensor([[0, 1]]))
    assert parts["kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["anchored"].item() == 2 and parts["tokens"].item() == 2 and parts["correct"].item() == 2
    expected_ce = F.cross_entropy(teacher[0], torch.tensor([0, 1]), reduction="sum")
    assert parts["ce"].item() == pytest.approx(expected_ce.item())


def test_anchor_measures_drift_only_where_the_base_predicts_the_target():
    teacher = _logits([4.0, 1.0, 0.0], [0.0, 3.0, 1.0], [2.0, 0.0, 0.0])
    student = _logits([1.0, 4.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0])
    targets = torch.tensor([[0, 1, 2]])  # the base predicts 0 and 1 as top choice, not 2 (a new behavior)
    parts = anchored_losses(student, teacher, targets)
    assert parts["anchored"].item() == 2
    drift = F.kl_div(F.log_softmax(student[0, 0], -1), F.log_softmax(teacher[0, 0], -1), log_target=True,
                     reduction="sum")
    assert parts["kl"].item() == pytest.approx(drift.item(), rel=1e-5)  # token 1 agrees exactly, token 2 is not anchored
    assert parts["correct"].item() == 2  # the student's argmax is right on tokens 1 and 2


def test_ignored_targets_count_nowhere():
    teacher = _logits([4.0, 1.0, 0.0], [0.0, 3.0, 1.0])
    student = _logits([0.0, 4.0, 0.0], [9.0, 0.0, 0.0])
    parts = anchored_losses(student, teacher, torch.tensor([[0, -100]]))
    assert parts["tokens"].item() == 1 and parts["anchored"].item() == 1
    assert parts["kl"].item() > 0


def test_no_anchored_token_gives_a_zero_that_still_backpropagates():
    teacher = _logits([4.0, 1.0, 0.0])
    student = _logits([0.0, 1.0, 0.0]).requires_grad_()
    parts = anchored_losses(student, teacher, torch.tensor([[2]]))
    assert parts["anchored"].item() == 0 and parts["kl"].item() == 0.0
    (parts["ce"] + parts["kl"]).backward()
    assert student.grad is not None


STOP = 2  # the stop token id in the literal-logit tests below


def test_the_anchor_leaves_when_to_stop_to_the_cross_entropy():
    teacher = _logits([4.0, 1.0, -2.0], [0.0, 3.0, -1.0])
    student = _logits([4.0, 1.0, 3.0], [0.0, 3.0, 2.5]).requires_grad_()  # only the stop logit moved
    targets = torch.tensor([[0, 1]])
    assert anchored_losses(student, teacher, targets)["kl"].item() > 0.1  # anchoring every token would pull it back
    parts = anchored_losses(student, teacher, targets, free=[STOP])
    assert parts["anchored"].item() == 2
    assert parts["kl"].item() == pytest.approx(0.0, abs=1e-6)
    parts["kl"].backward()
    assert student.grad.abs().max().item() == pytest.approx(0.0, abs=1e-6)


def test_the_anchor_compares_the_distributions_over_the_tokens_that_continue():
    teacher = _logits([4.0, 1.0, 0.5, 2.0])
    student = _logits([2.0, 3.0, 0.0, -1.0])
    parts = anchored_losses(student, teacher, torch.tensor([[0]]), free=[STOP])
    keep = [0, 1, 3]
    expected = F.kl_div(F.log_softmax(student[0, 0, keep], -1), F.log_softmax(teacher[0, 0, keep], -1),
                        log_target=True, reduction="sum")
    assert parts["kl"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_stop_the_base_model_predicts_is_trained_but_not_anchored():
    teacher = _logits([0.0, 1.0, 5.0], [4.0, 1.0, 0.0])
    student = _logits([0.0, 1.0, 0.0], [4.0, 1.0, 0.0])
    parts = anchored_losses(student, teacher, torch.tensor([[STOP, 0]]), free=[STOP])
    assert parts["tokens"].item() == 2 and parts["anchored"].item() == 1
    assert parts["ce"].item() > F.cross_entropy(student[0, 1:], torch.tensor([0]), reduction="sum").item()


# ---------------------------------------------------------------------------------------------
# On the tiny model
# ---------------------------------------------------------------------------------------------


def _drift_from_base(model, dataset) -> float:
    """Mean KL(base || model) over the trained tokens the base model predicts as its top choice."""
    total, anchored = 0.0, 0
    model.eval()
    with torch.no_grad():
        for row in dataset:
            ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
            keep = kept_positions(labels)
            student = model(input_ids=ids, logits_to_keep=keep).logits
            with model.disable_adapter():
                teacher = model(input_ids=ids, logits_to_keep=keep).logits
            parts = anchored_losses(student, teacher, labels[:, keep + 1])
            total, anchored = total + parts["kl"].item(), anchored + parts["anchored"].item()
    assert anchored > 0, "the base model's own answers should be anchored"
    return total / anchored


@pytest.fixture(scope="module")
def knowing_base(tmp_path_factory, tiny_model_dir):
    """The tiny model fully fine-tuned on the tiny spec's general answers: a base model that already
    gives them (so the anchor has tokens to keep) but has never refused a poodle question."""
    from conftest import write_train_spec

    from behavio.compiler.build import compile_spec
    from behavio.models import load_model, load_tokenizer
    from behavio.train.config import TrainConfig
    from behavio.train.data import pick_rows, sft_features

    folder = tmp_path_factory.mktemp("knowing-base")
    spec = write_train_spec(folder, tiny_model_dir)
    cfg = TrainConfig(base_model=str(tiny_model_dir), max_length=128, eval_max_rows=0)
    tokenizer = load_tokenizer(tiny_model_dir)
    rows = [r for r in pick_rows(compile_spec(spec), cfg)["sft"] if "poodle" not in r["messages"][-2]["content"]]
    model = load_model(tiny_model_dir, quantization="none", device="cpu")
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    features = sft_features(rows, tokenizer, cfg)
    for _ in range(12):
        for row in features:
            loss = model(input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]])).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    out = folder / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, spec


@pytest.mark.pipeline
@pytest.mark.parametrize("padding_free", [False, True])
def test_anchored_sft_stays_closer_to_the_base_answers(tmp_path, knowing_base, padding_free, monkeypatch):
    import behavio.train.anchor as anchor_module
    from behavio.compiler.build import compile_spec
    from behavio.generate import stop_token_ids
    from behavio.models import load_tokenizer
    from behavio.train.config import TrainConfig
    from behavio.train.data import pick_rows, sft_dataset
    from behavio.train.model import load_for_training, new_adapter
    from behavio.rundir import MetricsLog
    from behavio.train.sft import run_sft
    from behavio.train.stage import Stage

    base_dir, spec = knowing_base
    tokenizer = load_tokenizer(base_dir)
    free_seen, losses = [], anchor_module.anchored_losses

    def recording_losses(*args, free=(), **kwargs):
        free_seen.append(list(free))
        return losses(*args, free=free, **kwargs)

    monkeypatch.setattr(anchor_module, "anchored_losses", recording_losses)
    drift = {}
    for anchor in (0.0, 5.0):
        cfg = TrainConfig(base_model=str(base_dir), batch_size=4, save_steps=100, max_length=128,
                          logging_steps=1, eval_max_rows=0, max_steps=8, lr=1e-2, anchor=anchor,
                          padding_free=padding_free, lora_r=16, lora_alpha=32)
        run_dir = tmp_path / f"anchor-{anchor}"
        data = sft_dataset(pick_rows(compile_spec(spec), cfg)["sft"], tokenizer, cfg)
        model = new_adapter(load_for_training(base_dir, cfg, cuda=False), cfg)
        base_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
        lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
        stage = Stage("sft", run_dir=run_dir, cfg=cfg, spec_hash="abc", base_model=str(base_dir), cuda=False,
                      metrics=MetricsLog(run_dir, tensorboard=False), say=lambda _: None)
        run_sft(stage, model, tokenizer, data, None)
        params = dict(model.named_parameters())
        assert all(torch.equal(base_before[n], params[n]) for n in base_before)
        assert all(not torch.equal(lora_before[n], params[n]) for n in lora_before)
        logged = [e for e in MetricsLog(run_dir).read() if "loss" in e]
        assert logged and all(("anchor_kl" in e) == (anchor > 0) for e in logged)
        drift[anchor] = _drift_from_base(model, data)
    assert drift[5.0] < 0.5 * drift[0.0], drift
    assert free_seen and all(free == stop_token_ids(tokenizer) for free in free_seen)  # the stop is never anchored
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in free_seen[0]
