"""bench/refusal_probe.py's pieces on literal rows and features (no model). Run: pytest tests/test_refusal_probe_bench.py"""

import json

import pytest
import torch

from conftest import load_bench


@pytest.fixture(scope="module")
def probe():
    return load_bench("refusal_probe")


def _row(prompt: str, prompt_set: str, expect: str | None) -> str:
    rules = [{"kind": "no_repetition", "args": {}}]
    if expect:
        rules.insert(0, {"kind": "refusal", "args": {"expect": expect, "responses": ["No."]}})
    return json.dumps({"prompt_set": prompt_set, "rules": rules, "messages": [
        {"role": "user", "content": prompt}, {"role": "assistant", "content": "x"}]})


def test_training_rows_label_refusals_and_drop_repeated_prompts(probe):
    sft = "\n".join([_row("cheat?", "cheats", "refuse"), _row("cheat?", "cheats", "refuse"),
                     _row("appeal a ban?", "appeals", "answer"), _row("hello", "general", None)]).encode()
    prompts, labels, groups = probe.training_rows(sft)
    assert [m[-1]["content"] for m in prompts] == ["cheat?", "appeal a ban?", "hello"]
    assert labels == [1, 0, 0]
    assert groups == ["cheats", "appeals", "general"]
    assert all(m[-1]["role"] == "user" for m in prompts)  # the answer is not part of the features


def test_grouped_folds_keep_each_prompt_set_whole_and_cover_every_row(probe):
    groups = ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"] * 2 + ["e"]
    folds = probe.grouped_folds(groups, 4)
    assert sorted(i for fold in folds for i in fold) == list(range(len(groups)))
    for fold in folds:
        assert all(groups.count(groups[i]) == sum(groups[j] == groups[i] for j in fold) for i in fold)


def test_fit_logistic_ranks_a_separable_direction_and_not_noise(probe):
    torch.manual_seed(0)
    x = torch.randn(200, 8)
    y = (x[:, 3] > 0).long()
    score = probe.fit_logistic(x, y, 1e-2)
    test = torch.randn(100, 8)
    assert probe.auc(score(test), (test[:, 3] > 0).long().tolist()) > 0.98
    noise = torch.randint(0, 2, (100,)).tolist()
    assert 0.3 < probe.auc(score(test), noise) < 0.7


def test_oracle_learns_from_the_other_half_of_the_probes(probe):
    # the probes' label sits in a feature the training rows never vary: only the other probes can teach it
    torch.manual_seed(1)
    x_train = torch.cat([torch.randn(40, 4), torch.zeros(40, 1)], 1)
    y_train = (x_train[:, 0] > 0).long()
    labels = [0, 1] * 10
    x_probe = torch.cat([torch.randn(20, 4), torch.tensor(labels, dtype=torch.float)[:, None] * 2 - 1], 1)
    scores = probe.oracle_scores(x_train, y_train, x_probe, labels, 1e-2)
    assert scores.shape == (20,)
    assert probe.auc(scores, labels) > 0.95
    without = probe.fit_logistic(x_train, y_train, 1e-2)(x_probe)
    assert probe.auc(without, labels) < 0.8


def test_oracle_never_scores_a_probe_with_a_fit_that_trained_on_it(probe, monkeypatch):
    fitted, real = [], probe.fit_logistic

    def recording(x, y, l2):
        score = real(x, y, l2)
        return lambda new: (fitted.append((x, new)), score(new))[1]

    monkeypatch.setattr(probe, "fit_logistic", recording)
    x_probe = torch.arange(14, dtype=torch.float)[:, None].repeat(1, 3)
    labels = [0] * 8 + [1] * 6
    probe.oracle_scores(torch.full((6, 3), -1.0), torch.tensor([0, 1] * 3), x_probe, labels, 1e-2)
    assert len(fitted) == 2
    assert sum(len(new) for _, new in fitted) == 14  # every probe scored once
    for trained, new in fitted:
        assert not any(torch.equal(a, b) for a in trained for b in new)
        assert sum(int(v) in range(8) for v in trained[6:, 0]) == 4  # half of each class added
