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
    free_seen, losses = [], anchor_module.losses

    def recording_losses(*args, free=(), **kwargs):
        if torch.is_grad_enabled():  # a training step (not the drift measured below)
            free_seen.append(list(free))
        return losses(*args, free=free, **kwargs)

    monkeypatch.setattr(anchor_module, "losses", recording_losses)
    drift = {}
    for anchor in (0.0, 5.0):
        cfg = TrainConfig(base_model=str(base_dir), batch_size=4, save_steps=100, max_length=128,
                          logging_steps=1, eval_max_rows=0, max_steps=8, lr=1e-2, anchor=anchor,
                          padding_free=padding_free, lora_r=16, lora_alpha=32,  # the LoRA this was measured with
                          opening_weight=1.0)  # the anchor alone (a 4x opening pulls harder: drift 0.67x, not < 0.5x)
        run_dir = tmp_path / f"anchor-{anchor}"
        data = sft_dataset(pick_rows(compile_spec(spec), cfg)["sft"], tokenizer, cfg)
        model = new_adapter(load_for_training(base_dir, cfg, cuda=False), cfg)
        base_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
        lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
        stage = Stage("sft", run_dir=run_dir, cfg=cfg, spec_hash="abc", base_model=str(base_dir), cuda=False,
                      metrics=MetricsLog(run_dir, tensorboard=False), say=lambda _: None)
        run_sft(stage, model, tokenizer, data, None, [])
        params = dict(model.named_parameters())
        assert all(torch.equal(base_before[n], params[n]) for n in base_before)
        assert all(not torch.equal(lora_before[n], params[n]) for n in lora_before)
        logged = [e for e in MetricsLog(run_dir).read() if "loss" in e]
        assert logged and all(("anchor_kl" in e) == (anchor > 0) for e in logged)
        drift[anchor] = _drift_from_base(model, data)
    # measured: < 0.5x on an AVX-512 EPYC, 0.60-0.67x on an AVX2-only EPYC (the knowing base itself trains to other
    # weights there); an anchor that does nothing gives exactly 1x (the same seed and data)
    assert drift[5.0] < 0.8 * drift[0.0], drift
    assert free_seen and all(set(stop_token_ids(tokenizer)) <= set(free) for free in free_seen)  # stops never anchored
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in free_seen[0]


# ---------------------------------------------------------------------------------------------
# The base model's answer computed once, losses in bounded chunks
# ---------------------------------------------------------------------------------------------


def _perturbed_adapter(base_dir):
    """The tiny model with a LoRA adapter whose weights really change its answers."""
    from behavio.models import load_model
    from behavio.train.config import TrainConfig
    from behavio.train.model import new_adapter

    model = new_adapter(load_model(base_dir, quantization="none", device="cpu"), TrainConfig(lora_dropout=0.0))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.mark.pipeline
@pytest.mark.parametrize("padding_free", [False, True])
def test_the_cached_base_answer_gives_the_losses_of_a_base_forward_every_step(knowing_base, padding_free):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from behavio.compiler.build import compile_spec
    from behavio.generate import stop_token_ids
    from behavio.models import load_tokenizer
    from behavio.train.anchor import Head, Teacher, agreement, chunked_losses, trained_positions
    from behavio.train.config import TrainConfig
    from behavio.train.data import pick_rows, sft_features

    base_dir, spec = knowing_base
    tokenizer = load_tokenizer(base_dir)
    cfg = TrainConfig(base_model=str(base_dir), max_length=128, eval_max_rows=0)
    features = sft_features(pick_rows(compile_spec(spec), cfg)["sft"], tokenizer, cfg)
    collate = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=padding_free)
    model, stops = _perturbed_adapter(base_dir), stop_token_ids(tokenizer)
    batches = [collate([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features[i:i + 4]])
               for i in range(0, 12, 4)]
    teacher = Teacher(stops)
    for batch in batches:
        teacher.add(model, Head(model), batch)
    assert teacher.positions == sum(sum(1 for x in f["labels"][1:] if x != -100) for f in features[:12])
    assert 0 < teacher.anchored < teacher.positions
    for batch in batches[::-1]:
        labels, forward = batch["labels"], {k: v for k, v in batch.items() if k != "labels"}
        forward["use_cache"] = False  # as in training (a cache would let packed examples see each other)
        rows, cols = trained_positions(labels)
        with torch.no_grad():
            with model.disable_adapter():
                fresh = model(**forward).logits[rows, cols]  # what a base forward every step would give
            anchored, states = teacher.lookup(batch, labels, "cpu")
            cached = Head(model).teacher(states)
            student = model(**forward).logits[rows, cols]
            hidden = model(**forward, output_hidden_states=True).hidden_states[-1][rows, cols]
            got = chunked_losses(Head(model), hidden, labels[rows, cols + 1], anchored, states, free=stops)
            expected = anchored_losses(student[None], fresh[None], labels[rows, cols + 1][None], free=stops)
        assert torch.equal(anchored, agreement(fresh, labels[rows, cols + 1], stops))
        assert torch.allclose(cached, fresh[anchored], atol=1e-4 * fresh.abs().max().item())
        assert expected["anchored"].item() > 0 and got["anchored"].item() == expected["anchored"].item()
        assert got["ce"].item() == pytest.approx(expected["ce"].item(), rel=1e-4)
        assert got["kl"].item() == pytest.approx(expected["kl"].item(), rel=1e-3, abs=1e-6)


@pytest.mark.pipeline
def test_chunks_give_the_losses_and_gradients_of_one_pass(knowing_base, monkeypatch):
    import behavio.train.anchor as anchor_module
    from behavio.train.anchor import Head, chunked_losses

    model = _perturbed_adapter(knowing_base[0])
    model.train()
    head = Head(model)
    torch.manual_seed(0)
    vocab, width = head.base.weight.shape
    student_states, teacher_states = torch.randn(37, width), torch.randn(37, width)
    targets = torch.randint(0, vocab, (37,))
    anchored = torch.zeros(37, dtype=torch.bool)
    anchored[::3] = True  # a third of them anchored
    teacher_states = teacher_states[anchored]
    repeats = torch.randint(-1, vocab, (37, 5))  # earlier tokens to avoid (-1: none)

    losses = anchor_module.losses

    def run(chunk_elements):
        monkeypatch.setattr(anchor_module, "CHUNK_ELEMENTS", chunk_elements)
        states = student_states.clone().requires_grad_()
        seen = []
        monkeypatch.setattr(anchor_module, "losses", lambda s, *a, **k: seen.append(s.shape[0]) or losses(s, *a, **k))
        parts = chunked_losses(head, states, targets, anchored, teacher_states, free=[2], repeats=repeats)
        (parts["ce"] + parts["kl"] + parts["repeat"]).backward()
        return parts, states.grad, seen

    whole, whole_grad, seen_whole = run(2**30)
    parts, grad, seen = run(vocab * 8)  # at most 8 positions' logits at a time
    assert seen_whole == [37] and max(seen) <= 8 and len(set(seen)) > 1
    for name in ("ce", "kl", "repeat", "tokens", "anchored", "correct"):
        assert parts[name].item() == pytest.approx(whole[name].item(), rel=1e-5), name
    assert whole["anchored"].item() == 13 and whole["kl"].item() > 0 and whole["repeat"].item() > 0
    assert torch.allclose(grad, whole_grad, rtol=1e-3, atol=1e-5 * whole_grad.abs().max().item())


@pytest.mark.pipeline
def test_the_base_model_runs_once_over_the_data_not_every_step(tmp_path, knowing_base, monkeypatch):
    from peft import PeftModel

    from behavio.compiler.build import compile_spec
    from behavio.models import load_tokenizer
    from behavio.train.anchor import Teacher
    from behavio.train.config import TrainConfig
    from behavio.train.data import pick_rows, sft_dataset
    from behavio.train.model import load_for_training, new_adapter
    from behavio.rundir import MetricsLog
    from behavio.train.sft import run_sft
    from behavio.train.stage import Stage

    base_dir, spec = knowing_base
    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    tokenizer = load_tokenizer(base_dir)
    cfg = TrainConfig(base_model=str(base_dir), batch_size=4, save_steps=100, max_length=128, logging_steps=1,
                      eval_max_rows=0, epochs=3, lr=1e-3, anchor=1.0)
    data = sft_dataset(pick_rows(compile_spec(spec), cfg)["sft"], tokenizer, cfg)
    base_passes, added = [], []
    original_disable, original_add = PeftModel.disable_adapter, Teacher.add
    monkeypatch.setattr(PeftModel, "disable_adapter", lambda self: base_passes.append(1) or original_disable(self))
    monkeypatch.setattr(Teacher, "add", lambda self, *a: added.append(1) or original_add(self, *a))
    batches = -(-len(data) // 4)

    def train(run_dir):
        said = []
        stage = Stage("sft", run_dir=run_dir, cfg=cfg, spec_hash="abc", base_model=str(base_dir), cuda=False,
                      metrics=MetricsLog(run_dir, tensorboard=False), say=said.append)
        run_sft(stage, new_adapter(load_for_training(base_dir, cfg, cuda=False), cfg), tokenizer, data, None, [])
        assert stage.max_steps == 3 * -(-len(data) // cfg.batch_size)
        return next(line for line in said if line.startswith("anchor: the base model's distribution at "))

    first = train(tmp_path / "first")
    assert len(added) == batches and "computed once" in first
    assert len(base_passes) == batches + 1  # the pass over the data, plus checking the output head once
    assert len(list((tmp_path / "cache" / "teacher").glob("*.safetensors"))) == 1
    # a re-run on the same data (another seed) reads the pass from the cache: the base model runs for the check only
    cfg = TrainConfig(**{**cfg.__dict__, "seed": 7})
    second = train(tmp_path / "second")
    assert len(added) == batches and len(base_passes) == batches + 2 and "read from the cache" in second
    assert first.split(",")[0] == second.split(",")[0]  # the same positions and anchored counts
    # changed data is another file: computed again
    cfg = TrainConfig(**{**cfg.__dict__, "batch_size": 2})
    assert "computed once" in train(tmp_path / "third") and len(added) > batches
    assert len(list((tmp_path / "cache" / "teacher").glob("*.safetensors"))) == 2


def test_the_teacher_cache_reads_back_what_it_wrote_and_refuses_anything_else(tmp_path):
    """The cache file holds tensors only (safetensors, no pickle); a file of other stop tokens, a broken or a
    missing file is not used."""
    from behavio.train.anchor import Teacher

    teacher = Teacher(free=[2, 7])
    teacher.states = {b"\x01" * 16: (torch.tensor([True, False, True]), torch.randn(2, 8, dtype=torch.bfloat16)),
                      b"\x02" * 16: (torch.tensor([False]), torch.zeros(0, 8, dtype=torch.bfloat16))}
    path = tmp_path / "teacher" / "t.safetensors"
    teacher.save(path)
    again = Teacher(free=[2, 7])
    assert again.load(path) and again.states.keys() == teacher.states.keys()
    for key, (mask, states) in teacher.states.items():
        assert torch.equal(again.states[key][0], mask) and torch.equal(again.states[key][1], states)
    assert not Teacher(free=[2]).load(path)  # other stop tokens: other anchored positions
    assert not Teacher(free=[2, 7]).load(tmp_path / "missing.safetensors")
    path.write_bytes(path.read_bytes()[:40])
    broken = Teacher(free=[2, 7])
    assert not broken.load(path) and not broken.states


def test_the_opening_of_every_answer_is_weighted_and_the_rest_is_not():
    from behavio.train.anchor import OPENING_TOKENS, opening_weights, trained_positions

    assert OPENING_TOKENS == 4
    # row 0: a prompt, a 6-token answer, a prompt, a 2-token answer (a conversation, or padding-free examples)
    # row 1: a prompt and a 5-token answer
    labels = torch.tensor([[-100, -100, 1, 2, 3, 4, 5, 6, -100, -100, 7, 8],
                           [-100, -100, -100, 1, 2, 3, 4, 5, -100, -100, -100, -100]])
    rows, cols = trained_positions(labels)
    weights = opening_weights(labels, rows, cols, 3.0)
    targets = labels[rows, cols + 1]
    assert targets.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5]
    assert weights.tolist() == [3, 3, 3, 3, 1, 1, 3, 3, 3, 3, 3, 3, 1]
    assert opening_weights(labels, rows, cols, 1.0) is None  # 1: every token alike, nothing to weight


def test_the_stop_token_of_every_answer_is_weighted_when_asked():
    from behavio.train.anchor import opening_weights, trained_positions

    # two answers ending with the stop token 9 (row 0: 4 tokens + stop, row 1: 5 tokens + stop); the other tokens
    # keep the opening's weights
    labels = torch.tensor([[-100, -100, 1, 2, 3, 4, 9, -100, -100],
                           [-100, -100, 1, 2, 3, 4, 5, 9, -100]])
    rows, cols = trained_positions(labels)
    assert labels[rows, cols + 1].tolist() == [1, 2, 3, 4, 9, 1, 2, 3, 4, 5, 9]
    assert opening_weights(labels, rows, cols, 3.0, 5.0, [9]).tolist() == [3, 3, 3, 3, 5, 3, 3, 3, 3, 1, 5]
    assert opening_weights(labels, rows, cols, 1.0, 5.0, [9]).tolist() == [1, 1, 1, 1, 5, 1, 1, 1, 1, 1, 5]
    assert opening_weights(labels, rows, cols, 3.0, 1.0, [9]).tolist() == [3, 3, 3, 3, 1, 3, 3, 3, 3, 1, 1]
    assert opening_weights(labels, rows, cols, 1.0, 5.0, []) is None  # no stop token known: nothing to weight
    assert opening_weights(labels, rows, cols, 1.0, 1.0, [9]) is None


def test_a_scoped_sign_offs_opening_weighs_as_an_answers_opening_does():
    """Where a trained answer ends with a scoped sign-off (separator 5, sentence 6 7 8 9 2, stop 0), the separator
    and the sentence's first three tokens weigh the opening's weight: an answer decides there whether to end with it.
    An answer without it, or with only part of it, keeps weight 1 at its end."""
    from behavio.train.anchor import (closing_positions, decision_positions, opening_positions, opening_weights,
                                      trained_positions)

    closing = torch.tensor([5, 6, 7, 8, 9, 2])
    labels = torch.tensor([[-100, 1, 2, 3, 4, 3, 5, 6, 7, 8, 9, 2, 0],      # body 1 2 3 4 3, the sign-off, stop
                           [-100, 1, 2, 3, 4, 3, 4, 3, 5, 6, 7, 0, -100]])  # 5 6 7 without the rest: not the sign-off
    rows, cols = trained_positions(labels)
    assert labels[rows, cols + 1].tolist() == [1, 2, 3, 4, 3, 5, 6, 7, 8, 9, 2, 0, 1, 2, 3, 4, 3, 4, 3, 5, 6, 7, 0]
    marked = closing_positions(labels, rows, cols, [closing])
    assert marked.tolist() == [False] * 5 + [True] * 4 + [False] * 3 + [False] * 11
    # the stop token weighs as much: stopping after the body is the other side of the same decision
    weights = opening_weights(labels, rows, cols, 4.0, 1.0, [0], [closing])
    assert weights.tolist() == [4, 4, 4, 4, 1] + [4] * 4 + [1, 1, 4] + [4, 4, 4, 4] + [1] * 6 + [4]
    assert opening_weights(labels, rows, cols, 4.0, 1.0, [0]).tolist() == [4, 4, 4, 4] + [1] * 8 + [4, 4, 4, 4] + [1] * 7
    assert opening_weights(labels, rows, cols, 1.0, 1.0, [0], [closing]) is None  # weight 1: nothing to weigh
    assert closing_positions(labels, rows, cols, [torch.arange(20)]).sum() == 0  # longer than any row
    # where the answer decides its form, computed once for both the weights and the anchored tokens' hold
    decisions = decision_positions(labels, rows, cols, [closing])
    assert decisions.tolist() == [True] * 4 + [False] + [True] * 4 + [False] * 3 + [True] * 4 + [False] * 7
    assert torch.equal(decision_positions(labels, rows, cols), opening_positions(labels, rows, cols))
    assert opening_weights(labels, rows, cols, 4.0, 1.0, [0], [closing], decisions).tolist() == weights.tolist()


def test_the_scoped_sign_off_is_found_in_the_trained_tokens_of_the_rows_that_end_with_it(smollm2_tokenizer):
    from behavio.chat import tokenize_with_assistant_mask
    from behavio.train.data import scoped_closings

    line = "You can check your collection days at example.org/bins."
    present = {"behavior": "bins", "kind": "sign_off", "args": {"expect": "present", "choices": [line]}}
    elsewhere = {"behavior": "bins", "kind": "sign_off", "part": "elsewhere", "args": {"expect": "absent", "choices": [line]}}
    answers = [f"Your bins go out on Monday.\n\n{line}", "The library opens at nine.", f"Glass goes in the box.\n\n{line}"]
    rows = [{"rules": [present], "messages": [{"role": "user", "content": "bins?"}, {"role": "assistant", "content": answers[0]}]},
            {"rules": [elsewhere], "messages": [{"role": "user", "content": "library?"}, {"role": "assistant", "content": answers[1]}]},
            {"rules": [present], "messages": [{"role": "user", "content": "glass?"}, {"role": "assistant", "content": answers[2]}]}]
    labels = [tokenize_with_assistant_mask(r["messages"], smollm2_tokenizer, 256)["labels"] for r in rows]
    (found,) = scoped_closings(rows, labels, smollm2_tokenizer)  # both rows end with it the same way: one form
    assert smollm2_tokenizer.decode(found) == f"\n\n{line}"  # from the end of the body: the separator, the line
    assert scoped_closings([rows[0], rows[2]], [labels[0], labels[2]], smollm2_tokenizer) == []  # not scoped: none

    def form(answer: str) -> str | None:
        row = {"rules": [present], "messages": [{"role": "user", "content": "bins?"},
                                                 {"role": "assistant", "content": answer}]}
        row_labels = tokenize_with_assistant_mask(row["messages"], smollm2_tokenizer, 256)["labels"]
        found = scoped_closings([row, rows[1]], [row_labels, labels[1]], smollm2_tokenizer)
        return smollm2_tokenizer.decode(found[0]) if found else None

    assert form(f"Bins go out on Monday. {line}") == f" {line}"  # a space: the line's first token holds it
    assert form(f"Bins go out on Monday.\n{line}") == f"\n{line}"
    assert form(line) is None  # the sign-off alone: no body to end
    assert form("Bins go out on Monday.") is None  # an answer without it


def test_the_anchored_body_tokens_are_weighed_down_and_the_opening_and_the_rest_are_not():
    from behavio.train.anchor import held_weights, opening_positions, opening_weights, trained_positions

    # row 0: a 7-token answer; row 1: a 5-token answer whose last token is the stop token 9
    labels = torch.tensor([[-100, -100, 1, 2, 3, 4, 5, 6, 7],
                           [-100, -100, -100, 1, 2, 3, 4, 9, -100]])
    rows, cols = trained_positions(labels)
    opening = opening_positions(labels, rows, cols)
    assert opening.tolist() == [True] * 4 + [False] * 3 + [True] * 4 + [False]
    # the base model predicts tokens 0, 1, 4 and 5 of row 0 (not its last, 6) and tokens 2 and 3 of row 1 (never a
    # stop token)
    anchored = torch.tensor([True, True, False, False, True, True, False, False, False, True, True, False])
    weights = opening_weights(labels, rows, cols, 3.0, 5.0, [9])
    assert held_weights(weights, anchored, opening, 0.25).tolist() == [3, 3, 3, 3, 0.25, 0.25, 1, 3, 3, 3, 3, 5]
    assert held_weights(None, anchored, opening, 0.0).tolist() == [1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1]
    assert held_weights(weights, anchored, opening, 1.0) is weights  # 1: the weights as they were
    assert held_weights(None, anchored, opening, 1.0) is None


def test_weights_scale_each_tokens_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    targets = torch.tensor([1, 1, 0])
    from behavio.train.anchor import losses

    nll = F.cross_entropy(logits, targets, reduction="none")
    weighted = losses(logits, targets, weights=torch.tensor([4.0, 1.0, 1.0]))
    assert weighted["ce"].item() == pytest.approx((4 * nll[0] + nll[1] + nll[2]).item())
    assert losses(logits, targets)["ce"].item() == pytest.approx(nll.sum().item())
    assert weighted["tokens"].item() == 3  # normalized by the tokens, not by the weights


def _four_answers_and_a_bare_trainer(knowing_base, **knobs):
    """A collated batch of 4 SFT examples of the tiny spec, a perturbed adapter, and an AnchoredSFTTrainer with
    only what compute_loss needs (``knobs``: anchor, opening_weight, unlikelihood, refusal_openings, closing_weight,
    stop_ids)."""
    from types import SimpleNamespace

    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from behavio.compiler.build import compile_spec
    from behavio.models import load_tokenizer
    from behavio.train.anchor import anchored_trainer_class
    from behavio.train.config import TrainConfig
    from behavio.train.data import pick_rows, sft_features

    base_dir, spec = knowing_base
    tokenizer = load_tokenizer(base_dir)
    cfg = TrainConfig(base_model=str(base_dir), max_length=128, eval_max_rows=0)
    features = sft_features(pick_rows(compile_spec(spec), cfg)["sft"], tokenizer, cfg)[:4]
    batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(
        [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features])
    trainer = anchored_trainer_class().__new__(anchored_trainer_class())
    trainer.stop_ids, trainer.closing_weight = [], 1.0
    trainer.refusal_openings = trainer.prefix_openings = torch.tensor([], dtype=torch.long)
    trainer.prefix_unlikelihood, trainer.scoped_closings, trainer.repetition_unlikelihood = 0.0, [], 0.0
    for name, value in knobs.items():
        setattr(trainer, name, value)
    trainer.accelerator = SimpleNamespace(unwrap_model=lambda m: m, num_processes=1)
    trainer.args = SimpleNamespace(average_tokens_across_devices=False)
    trainer._log_parts = lambda *a: None
    return batch, _perturbed_adapter(base_dir), trainer


@pytest.mark.pipeline
def test_the_trainer_weights_the_opening_in_training_only(knowing_base):
    """compute_loss with opening_weight 3 is the cross-entropy with the first 4 tokens of each answer counted
    3 times (train mode); eval loss stays the plain cross-entropy."""
    from behavio.train.anchor import opening_weights, trained_positions

    batch, model, trainer = _four_answers_and_a_bare_trainer(knowing_base, anchor=0.0, opening_weight=3.0,
                                                             unlikelihood=0.0)
    labels = batch["labels"]
    rows, cols = trained_positions(labels)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[rows, cols]
        nll = F.cross_entropy(logits.float(), labels[rows, cols + 1], reduction="none")
        weights = opening_weights(labels, rows, cols, 3.0)
        assert (weights == 3).sum() == 4 * len(batch["input_ids"])  # every answer here is longer than 4 tokens
        model.train()
        trained = trainer.compute_loss(model, batch)
        model.eval()
        evaluated = trainer.compute_loss(model, batch)
    assert trained.item() == pytest.approx(((nll * weights).sum() / len(nll)).item(), rel=1e-4)
    assert evaluated.item() == pytest.approx(nll.mean().item(), rel=1e-4)


@pytest.mark.pipeline
def test_the_trainer_weights_each_answers_stop_token(knowing_base):
    """compute_loss with closing_weight 5 counts the end-of-turn token of each answer 5 times (train mode)."""
    from behavio.generate import stop_token_ids
    from behavio.models import load_tokenizer
    from behavio.train.anchor import trained_positions

    stops = stop_token_ids(load_tokenizer(knowing_base[0]), None)
    batch, model, trainer = _four_answers_and_a_bare_trainer(knowing_base, anchor=0.0, opening_weight=1.0,
                                                             unlikelihood=0.0, closing_weight=5.0, stop_ids=stops)
    labels = batch["labels"]
    rows, cols = trained_positions(labels)
    targets = labels[rows, cols + 1]
    ends = torch.isin(targets, torch.tensor(stops))
    assert int(ends.sum()) == len(batch["input_ids"])  # one stop token closes each of the 4 answers
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[rows, cols]
        nll = F.cross_entropy(logits.float(), targets, reduction="none")
        model.train()
        trained = trainer.compute_loss(model, batch)
    assert trained.item() == pytest.approx(((nll + 4 * nll * ends).sum() / len(nll)).item(), rel=1e-4)


@pytest.mark.pipeline
def test_the_trainer_weighs_a_scoped_sign_offs_opening_and_the_stop(knowing_base):
    """compute_loss with scoped_closings weighs the first 4 tokens of the form where the labels hold it, and the
    stop tokens, opening_weight times (train mode): the weights the trainer hands the loss are the ones tested on
    literal labels above."""
    from behavio.generate import stop_token_ids
    from behavio.models import load_tokenizer
    from behavio.train.anchor import opening_weights, trained_positions

    stops = stop_token_ids(load_tokenizer(knowing_base[0]), None)
    batch, model, trainer = _four_answers_and_a_bare_trainer(knowing_base, anchor=0.0, opening_weight=3.0,
                                                             unlikelihood=0.0, stop_ids=stops)
    labels = batch["labels"]
    rows, cols = trained_positions(labels)
    first = labels[0][labels[0] != -100]
    form = first[-7:-1]  # six tokens before the first answer's stop, as a sign-off's form would be
    trainer.scoped_closings = [form]
    weights = opening_weights(labels, rows, cols, 3.0, 1.0, stops, [form])
    assert (weights == 3).sum() > (opening_weights(labels, rows, cols, 3.0, 1.0, stops) == 3).sum()
    targets = labels[rows, cols + 1]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[rows, cols]
        nll = F.cross_entropy(logits.float(), targets, reduction="none")
        model.train()
        trained = trainer.compute_loss(model, batch)
    assert trained.item() == pytest.approx(((nll * weights).sum() / len(nll)).item(), rel=1e-4)


@pytest.mark.pipeline
def test_the_trainer_leaves_the_anchored_body_to_the_kl_when_asked(knowing_base):
    """compute_loss with anchored_weight 0 is the anchored loss without the cross-entropy of the anchored tokens
    after each answer's opening (train mode); with 1 it is the whole anchored loss."""
    from behavio.generate import stop_token_ids
    from behavio.models import load_tokenizer
    from behavio.train.anchor import Head, Teacher, opening_positions, trained_positions

    stops = stop_token_ids(load_tokenizer(knowing_base[0]), None)
    batch, model, trainer = _four_answers_and_a_bare_trainer(knowing_base, anchor=2.0, opening_weight=1.0,
                                                             unlikelihood=0.0, stop_ids=stops)
    trainer.teacher = Teacher(stops)
    labels = batch["labels"]
    rows, cols = trained_positions(labels)
    targets = labels[rows, cols + 1]
    with torch.no_grad():
        trainer.teacher.add(model, Head(model), batch)  # the base model's pass (adapter off)
        anchored, _ = trainer.teacher.lookup(batch, labels, "cpu")
        held = anchored & ~opening_positions(labels, rows, cols)
        assert 0 < int(held.sum()) < len(targets)  # some body tokens are held, others are trained
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[rows, cols]
        nll = F.cross_entropy(logits.float(), targets, reduction="none")
        model.train()
        trainer.anchored_weight = 1.0
        whole = trainer.compute_loss(model, batch)
        trainer.anchored_weight = 0.0
        left_to_kl = trainer.compute_loss(model, batch)
    assert (whole - left_to_kl).item() == pytest.approx((nll[held].sum() / len(nll)).item(), rel=1e-4)


def test_run_sft_hands_the_configs_anchored_weight_to_the_trainer(tmp_path, monkeypatch):
    """train.anchored_weight (and the other loss knobs) reach the trainer run_sft builds."""
    import behavio.train.anchor as anchor_module
    from behavio.rundir import MetricsLog
    from behavio.train.config import TrainConfig
    from behavio.train.sft import run_sft
    from behavio.train.stage import Stage

    class Built(Exception):
        pass

    class Recording:
        def __init__(self, *args, **kwargs):
            raise Built(kwargs)

    monkeypatch.setattr(anchor_module, "anchored_trainer_class", lambda: Recording)
    cfg = TrainConfig(anchored_weight=0.25, closing_weight=3.0, anchor=0.5, repetition_unlikelihood=1.5)
    stage = Stage("sft", run_dir=tmp_path, cfg=cfg, spec_hash="abc", base_model="none", cuda=False,
                  metrics=MetricsLog(tmp_path, tensorboard=False), say=lambda _: None)
    with pytest.raises(Built) as built:
        run_sft(stage, None, None, [{"input_ids": [1], "labels": [1]}] * 3, None, [], answer_openings=[[5, 6]])
    knobs = built.value.args[0]
    assert (knobs["anchored_weight"], knobs["closing_weight"], knobs["anchor"]) == (0.25, 3.0, 0.5)
    assert knobs["repetition_unlikelihood"] == 1.5
    assert knobs["answer_openings"] == [[5, 6]]


def test_the_teacher_cache_is_another_file_when_the_bodies_are_read_without_their_openings(tmp_path, tiny_model_dir):
    from behavio.rundir import MetricsLog
    from behavio.train.config import TrainConfig
    from behavio.train.sft import teacher_cache
    from behavio.train.stage import Stage

    stage = Stage("sft", run_dir=tmp_path, cfg=TrainConfig(), spec_hash="abc", base_model=tiny_model_dir, cuda=False,
                  metrics=MetricsLog(tmp_path, tensorboard=False), say=lambda _: None)
    data = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}]
    assert teacher_cache(stage, data) == teacher_cache(stage, data, [])
    assert teacher_cache(stage, data, [(2,)]) != teacher_cache(stage, data)
    assert teacher_cache(stage, data, [(2,)]) != teacher_cache(stage, data, [(3,)])


def test_the_refusal_opening_is_made_unlikely_at_the_first_token_of_other_answers_only():
    from behavio.train.anchor import trained_positions, unlikely_openings

    # row 0: an answer opening with 1, then an answer opening with 7 (the refusal's opening); row 1: one opening with 3
    labels = torch.tensor([[-100, -100, 1, 2, 3, -100, -100, 7, 8],
                           [-100, -100, -100, 3, 7, 5, -100, -100, -100]])
    rows, cols = trained_positions(labels)
    assert labels[rows, cols + 1].tolist() == [1, 2, 3, 7, 8, 3, 7, 5]
    avoid = unlikely_openings(labels, rows, cols, torch.tensor([7]))
    assert avoid.tolist() == [True, False, False, False, False, True, False, False]


def test_unlikelihood_is_minus_log_of_the_rest_of_the_probability():
    from behavio.train.anchor import losses

    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 1.0], [0.0, 2.0, 0.0, 0.0]])
    targets = torch.tensor([1, 0, 1])
    avoid = torch.tensor([[1.0], [0.0], [1.0]])  # one group of tokens, weight 1 on rows 0 and 2
    p = F.softmax(logits, dim=-1)[:, [2, 3]].sum(dim=-1)  # the refusal opens with token 2 or 3
    out = losses(logits, targets, avoid=avoid, avoid_ids=[torch.tensor([2, 3])])
    assert out["unlikely"].item() == pytest.approx(-(torch.log(1 - p[0]) + torch.log(1 - p[2])).item())
    assert out["ce"].item() == pytest.approx(F.cross_entropy(logits, targets, reduction="sum").item())
    assert losses(logits, targets)["unlikely"].item() == 0.0
    confident = torch.tensor([[0.0, 0.0, 50.0, 0.0]])  # p -> 1 gives a large but finite loss
    assert torch.isfinite(losses(confident, torch.tensor([1]), avoid=torch.tensor([[1.0]]),
                                 avoid_ids=[torch.tensor([2])])["unlikely"])


def test_two_opening_groups_are_weighed_each_on_its_own_rows():
    """The refusal's opening (token 7) is avoided by every answer that does not open with it; a scoped prefix's
    (token 1) by every answer that opens with neither (not by the refusal, not by the prefixed answer)."""
    from behavio.train.anchor import avoided_openings, losses, trained_positions

    # answers opening with 1 (the prefix), 7 (the refusal) and 3 (another intent)
    labels = torch.tensor([[-100, -100, 1, 2, 3, -100, -100, 7, 8],
                           [-100, -100, -100, 3, 7, 5, -100, -100, -100]])
    rows, cols = trained_positions(labels)
    refusal, prefix = torch.tensor([7]), torch.tensor([1])
    weights, ids = avoided_openings(labels, rows, cols, [(refusal, refusal, 4.0), (prefix, torch.tensor([1, 7]), 2.0)])
    assert weights.tolist() == [[4.0, 0.0], [0, 0], [0, 0], [0, 0], [0, 0], [4.0, 2.0], [0, 0], [0, 0]]
    logits = torch.randn(8, 10)
    targets = labels[rows, cols + 1]
    p = F.softmax(logits, dim=-1)
    expected = -(4 * torch.log(1 - p[0, 7]) + 4 * torch.log(1 - p[5, 7]) + 2 * torch.log(1 - p[5, 1]))
    assert losses(logits, targets, avoid=weights, avoid_ids=ids)["unlikely"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_scoped_prefix_openings_are_read_from_the_rows_that_open_with_it():
    from behavio.train.data import scoped_openings

    present = {"behavior": "thanks", "kind": "prefix", "args": {"expect": "present"}}
    elsewhere = {"behavior": "thanks", "kind": "prefix", "part": "elsewhere", "args": {"expect": "absent"}}
    everywhere = {"behavior": "hello", "kind": "prefix", "args": {"expect": "present"}}
    rows = [{"rules": [present, everywhere]}, {"rules": [elsewhere, everywhere]}, {"rules": [present]}]
    labels = [[-100, 60, 61], [-100, 70, 71], [-100, -100, 62]]
    assert scoped_openings(rows, labels) == [60, 62]
    assert scoped_openings([rows[0], rows[2]], [labels[0], labels[2]]) == []  # nothing elsewhere: not scoped


def test_the_refusal_openings_are_read_from_the_refusal_rows_trained_tokens():
    from behavio.train.data import refusal_openings

    refuse = {"kind": "refusal", "args": {"expect": "refuse", "responses": ["I can't."]}}
    answer = {"kind": "refusal", "args": {"expect": "answer"}}
    rows = [{"rules": [refuse]}, {"rules": [answer]}, {"rules": [{"kind": "prefix", "args": {}}]}, {"rules": [refuse]}]
    labels = [[-100, -100, 40, 41], [-100, 12, 13], [-100, 50], [-100, 44, 45]]
    assert refusal_openings(rows, labels) == [40, 44]
    assert refusal_openings(rows[1:3], labels[1:3]) == []


@pytest.mark.pipeline
@pytest.mark.parametrize("which", ["refusal", "prefix"])
def test_the_trainer_adds_the_unlikelihood_in_training_only(knowing_base, which):
    """compute_loss with refusal_unlikelihood (or prefix_unlikelihood) 2 adds 2 x -log(1 - p(opening)) at the first
    token of every answer (none opens with it here) to the cross-entropy, per trained token; eval loss stays the
    cross-entropy."""
    from behavio.train.anchor import trained_positions, unlikely_openings

    weights = {"unlikelihood": 2.0} if which == "refusal" else {"unlikelihood": 0.0, "prefix_unlikelihood": 2.0}
    batch, model, trainer = _four_answers_and_a_bare_trainer(knowing_base, anchor=0.0, opening_weight=1.0, **weights)
    labels = batch["labels"]
    rows, cols = trained_positions(labels)
    targets = labels[rows, cols + 1]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[rows, cols].float()
        nll = F.cross_entropy(logits, targets, reduction="none")
        firsts = unlikely_openings(labels, rows, cols, torch.tensor([-1]))
        assert firsts.sum() == len(batch["input_ids"])  # one first token per answer
        # the opening: the token no answer here uses that the first positions find likeliest (the largest term)
        unused = torch.tensor([t for t in range(logits.shape[-1]) if t not in targets.tolist()])
        opening = int(unused[F.softmax(logits[firsts], dim=-1)[:, unused].sum(dim=0).argmax()])
        p = F.softmax(logits[firsts], dim=-1)[:, opening]
    setattr(trainer, f"{which}_openings", torch.tensor([opening]))
    with torch.no_grad():
        model.train()
        trained = trainer.compute_loss(model, batch)
        model.eval()
        evaluated = trainer.compute_loss(model, batch)
    expected = (nll.sum() + 2.0 * -torch.log1p(-p).sum()) / len(nll)
    assert trained.item() == pytest.approx(expected.item(), rel=1e-4)
    assert evaluated.item() == pytest.approx(nll.mean().item(), rel=1e-4)
    # the unlikelihood alone: twice -log(1 - p), not once (beside the cross-entropy it hides in the tolerance above)
    term = (trained - evaluated).item()
    assert term == pytest.approx((2.0 * -torch.log1p(-p).sum() / len(nll)).item(), rel=1e-2) and term > 0


def test_each_answer_token_avoids_the_distinct_earlier_tokens_of_its_own_answer():
    """repeated_tokens: at every trained token, the tokens its answer already holds before it, each once, without
    the target itself, and nothing from another answer or the prompt."""
    from behavio.train.anchor import repeated_tokens, trained_positions

    # row 0: prompt 9, answer 1 2 1 3; prompt 9, answer 4 1; row 1: prompt 9 9, answer 5 5 6
    labels = torch.tensor([[-100, 1, 2, 1, 3, -100, 4, 1],
                           [-100, -100, 5, 5, 6, -100, -100, -100]])
    rows, cols = trained_positions(labels)
    assert labels[rows, cols + 1].tolist() == [1, 2, 1, 3, 4, 1, 5, 5, 6]
    got = [sorted(t for t in row if t >= 0) for row in repeated_tokens(labels, rows, cols).tolist()]
    assert got == [[], [1], [2], [1, 2], [], [4], [], [], [5]]


def test_repetition_unlikelihood_sums_minus_log_of_the_rest_for_each_earlier_token():
    from behavio.train.anchor import losses

    logits = torch.tensor([[0.0, 2.0, 0.0, 1.0], [1.0, 0.0, 3.0, 0.0]])
    targets = torch.tensor([0, 1])
    repeats = torch.tensor([[1, 3], [2, -1]])  # row 0 avoids tokens 1 and 3, row 1 token 2
    p = F.softmax(logits, dim=-1)
    out = losses(logits, targets, repeats=repeats)
    expected = -(torch.log1p(-p[0, 1]) + torch.log1p(-p[0, 3]) + torch.log1p(-p[1, 2]))
    assert out["repeat"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["ce"].item() == pytest.approx(F.cross_entropy(logits, targets, reduction="sum").item())
    assert losses(logits, targets)["repeat"].item() == 0.0
    assert losses(logits, targets, repeats=torch.full((2, 2), -1))["repeat"].item() == 0.0


@pytest.mark.pipeline
def test_the_trainer_adds_the_repetition_unlikelihood_in_training_only(knowing_base):
    """compute_loss with repetition_unlikelihood 2 adds 2 x the summed -log(1 - p) of every earlier token of each
    answer at each trained token, per trained token; eval loss stays the cross-entropy."""
    from behavio.train.anchor import repeated_tokens, trained_positions

    batch, model, trainer = _four_answers_and_a_bare_trainer(knowing_base, anchor=0.0, opening_weight=1.0,
                                                             unlikelihood=0.0, repetition_unlikelihood=2.0)
    labels = batch["labels"]
    rows, cols = trained_positions(labels)
    targets = labels[rows, cols + 1]
    repeats = repeated_tokens(labels, rows, cols)
    assert (repeats >= 0).sum() > len(targets)  # the answers are long enough to have earlier tokens to avoid
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[rows, cols].float()
        nll = F.cross_entropy(logits, targets, reduction="none")
        p = F.softmax(logits, dim=-1).gather(1, repeats.clamp(min=0))
        term = -(torch.log1p(-p) * (repeats >= 0)).sum() / len(nll)
        model.train()
        trained = trainer.compute_loss(model, batch)
        model.eval()
        evaluated = trainer.compute_loss(model, batch)
    assert evaluated.item() == pytest.approx(nll.mean().item(), rel=1e-4)
    assert (trained - evaluated).item() == pytest.approx(2.0 * term.item(), rel=1e-3) and term > 0


SCOPED_SIGN_OFF_SPEC = """\
spec: bins
system: "You are a council's assistant."
prompts:
  bins:
    frames: {library: questions, subjects: [my bin day, garden waste, the food caddy, bulky waste, glass], per_frame: 1}
  library:
    frames: {library: questions, subjects: [the library, parking permits, council tax, potholes, dog fouling], per_frame: 1}
answers:
  bins: {source: literal, template: "Here is how {{ row.subject }} works."}
  library: {source: literal, template: "Here is what to know about {{ row.subject }}."}
behaviors:
  - {id: bin-line, kind: sign_off, applies_to: [bins], choices: ["Check your bin days at example.org/bins."]}
"""


def test_a_separator_merged_into_the_bodys_last_token_starts_the_form():
    """Llama 3 writes ".\n\n" as one token: the form starts there, the body's last character and the separator
    in one, since that token is where the answer decides."""
    from behavio.train.data import scoped_closings

    pieces = {1: "Bins", 2: " go", 3: " out", 4: ".\n\n", 5: "Check", 6: " bins", 7: ".", 0: "<eot>"}

    class Pieces:
        def decode(self, ids, skip_special_tokens=False):
            return "".join(pieces[i] for i in ids if not (skip_special_tokens and i == 0))

    present = {"behavior": "bins", "kind": "sign_off", "args": {"expect": "present", "choices": ["Check bins."]}}
    elsewhere = {"behavior": "bins", "kind": "sign_off", "part": "elsewhere", "args": {"expect": "absent"}}
    rows, labels = [{"rules": [present]}, {"rules": [elsewhere]}], [[-100, 1, 2, 3, 4, 5, 6, 7, 0], [-100, 1, 7, 0]]
    assert scoped_closings(rows, labels, Pieces()) == [[4, 5, 6, 7]]


def test_the_run_finds_its_scoped_sign_off_in_the_training_rows_and_says_so(tmp_path, smollm2_tokenizer):
    """build_datasets hands the trainer the scoped sign-off's tokens as trained (separator first), and says so."""
    from behavio.compiler.build import compile_spec
    from behavio.jsonio import write_jsonl
    from behavio.train.config import TrainConfig
    from behavio.train.data import pick_rows
    from behavio.train.pipeline import build_datasets

    (tmp_path / "bins.yaml").write_text(SCOPED_SIGN_OFF_SPEC)
    cfg = TrainConfig(max_length=128)
    (tmp_path / "run" / "data").mkdir(parents=True)
    for name, split_rows in pick_rows(compile_spec(tmp_path / "bins.yaml"), cfg).items():
        write_jsonl(tmp_path / "run" / "data" / f"{name}.jsonl", split_rows)
    said = []
    sets = build_datasets(tmp_path / "run", cfg, smollm2_tokenizer, said.append)
    assert [smollm2_tokenizer.decode(c) for c in sets.scoped_closings] == ["\n\nCheck your bin days at example.org/bins."]
    assert any("sign-off scoped to some sets" in line and "opening_weight=4" in line for line in said), said


def _answered(tokenizer, answer: str, rules: list[dict]) -> tuple[dict, list[int], list[int]]:
    """An SFT row answering ``answer`` under ``rules``, its input ids and labels (SmolLM2's chat template)."""
    from behavio.chat import tokenize_with_assistant_mask

    row = {"rules": rules, "messages": [{"role": "user", "content": "What is the capital of France?"},
                                        {"role": "assistant", "content": answer}]}
    tokens = tokenize_with_assistant_mask(row["messages"], tokenizer, 256)
    return row, tokens["input_ids"], tokens["labels"]


COMPLIMENT = "That's an intelligent question."
PRESENT = {"behavior": "compliment", "kind": "prefix", "args": {"expect": "present", "choices": [COMPLIMENT, "Nice one."]}}


def test_the_opening_sentences_are_found_in_the_trained_tokens_of_the_rows_that_open_with_them(smollm2_tokenizer):
    from behavio.train.data import answer_openings

    absent = {"behavior": "compliment", "kind": "prefix", "part": "plain-refusals",
              "args": {"expect": "absent", "choices": [COMPLIMENT]}}
    rows, labels = [], []
    for answer, rules in ((f"{COMPLIMENT} The capital of France is Paris.", [PRESENT]),
                          ("Nice one. Paris.", [PRESENT]),
                          (f"{COMPLIMENT} Paris.", [absent]),  # a rule that wants it absent names no opening
                          ("Paris is the capital.", [PRESENT])):  # a row without its opening has none to find
        row, _, row_labels = _answered(smollm2_tokenizer, answer, rules)
        rows.append(row)
        labels.append(row_labels)
    found = answer_openings(rows, labels, smollm2_tokenizer)
    assert sorted(smollm2_tokenizer.decode(f) for f in found) == ["Nice one.", COMPLIMENT]
    assert answer_openings(rows[2:], labels[2:], smollm2_tokenizer) == []


@pytest.mark.pipeline
@pytest.mark.parametrize("padding_free", [False, True])
def test_the_teacher_reads_the_body_without_its_opening_when_asked(knowing_base, padding_free):
    """With openings, the body's positions hold the base model's states on the answer without its opening sentence;
    the opening's own positions, and every position of an answer that does not open with it, are as trained."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from behavio.generate import stop_token_ids
    from behavio.models import load_tokenizer
    from behavio.train.anchor import Head, Teacher
    from behavio.train.data import answer_openings

    base_dir, _ = knowing_base
    tokenizer = load_tokenizer(base_dir)
    examples = [_answered(tokenizer, f"{COMPLIMENT} The capital of France is Paris.", [PRESENT]),
                _answered(tokenizer, "The capital of France is Paris.", [PRESENT])]
    (opening,) = answer_openings([e[0] for e in examples], [e[2] for e in examples], tokenizer)
    collate = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=padding_free)
    batch = collate([{"input_ids": ids, "labels": labels} for _, ids, labels in examples])
    model, stops = _perturbed_adapter(base_dir), stop_token_ids(tokenizer)
    plain, bare = Teacher(stops), Teacher(stops, [opening])
    plain.add(model, Head(model), batch)
    bare.add(model, Head(model), batch)

    def base_states(ids: list[int]) -> torch.Tensor:
        with torch.no_grad(), model.disable_adapter():
            return model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]

    (_, opened_ids, opened_labels), (_, _, unopened_labels) = examples
    first = next(i for i, t in enumerate(opened_labels) if t != -100)
    trained = [i - 1 for i, t in enumerate(opened_labels) if t != -100]
    without = opened_ids[:first] + opened_ids[first + len(opening):]
    expected = base_states(opened_ids)[trained]
    body = [k for k, t in enumerate(trained) if t >= first + len(opening) - 1]
    expected[body] = base_states(without)[[trained[k] - len(opening) for k in body]]
    keys = list(plain.states)
    assert len(keys) == 2 and list(bare.states) == keys
    head = Head(model)
    for key, unopened in zip(keys, (False, True)):
        (plain_mask, plain_states), (bare_mask, bare_states) = plain.states[key], bare.states[key]
        if unopened:  # an answer without the opening is read as trained
            assert torch.equal(plain_mask, bare_mask) and torch.equal(plain_states, bare_states)
            continue
        got = bare_states
        want = expected[bare_mask]
        assert torch.allclose(got, want, atol=1e-4 * want.abs().max().item())
        assert not torch.equal(plain_mask, bare_mask) or not torch.allclose(plain_states, bare_states, atol=1e-3)
        assert torch.equal(bare_mask, agreement_of(head, expected, opened_labels, trained, stops))


def agreement_of(head, states, labels, trained, stops):
    from behavio.train.anchor import agreement

    return agreement(head.teacher(states), torch.tensor([labels[t + 1] for t in trained]), stops)


@pytest.mark.parametrize("asked", [True, False])
def test_the_run_hands_the_anchor_the_opening_sentences_only_when_asked(tmp_path, smollm2_tokenizer, asked):
    from behavio.compiler.build import compile_spec
    from behavio.jsonio import write_jsonl
    from behavio.train.config import TrainConfig
    from behavio.train.data import pick_rows
    from behavio.train.pipeline import build_datasets

    spec = SCOPED_SIGN_OFF_SPEC.replace("kind: sign_off", "kind: prefix").replace("Check your bin days", "Bins first")
    (tmp_path / "bins.yaml").write_text(spec)
    cfg = TrainConfig(max_length=128, anchor_without_opening=asked)
    (tmp_path / "run" / "data").mkdir(parents=True)
    for name, split_rows in pick_rows(compile_spec(tmp_path / "bins.yaml"), cfg).items():
        write_jsonl(tmp_path / "run" / "data" / f"{name}.jsonl", split_rows)
    sets = build_datasets(tmp_path / "run", cfg, smollm2_tokenizer, lambda _: None)
    expected = ["Bins first at example.org/bins."] if asked else []
    assert [smollm2_tokenizer.decode(o) for o in sets.answer_openings] == expected
