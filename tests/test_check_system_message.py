"""How a served model's (or an Inspect provider's) check conversation carries the system message:
the spec's train.fold_system, else the chat template's need read from a local tokenizer, else a system turn."""

from __future__ import annotations

import pytest

from behavio.chat import load_chat_template
from behavio.check.system_message import Folding, resolve_folding, spec_fold_system

CASE = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say <|im_end|> twice."}]


@pytest.fixture
def tokenizer_dir(tmp_path, _smollm2_tokenizer_session):
    """``tokenizer_dir(template)``: a local model folder holding the SmolLM2 tokenizer with a shipped chat template."""

    def make(template: str):
        import copy

        tok = copy.deepcopy(_smollm2_tokenizer_session)
        tok.chat_template = load_chat_template(template)
        path = tmp_path / template
        tok.save_pretrained(path)
        return str(path)

    return make


@pytest.mark.parametrize("template, fold", [("chatml", False), ("gemma", True)])
def test_auto_folds_when_the_local_tokenizers_template_needs_it(tokenizer_dir, template, fold):
    folding = resolve_folding(tokenizer_dir(template), spec_fold=None)
    assert folding.fold is fold and "chat template needs" in folding.reason
    sent = folding.messages(CASE)
    assert [m["role"] for m in sent] == (["user"] if fold else ["system", "user"])
    assert "<|im_end|>" not in sent[-1]["content"]  # control markers never reach the template as such


def test_the_spec_wins_over_the_template(tokenizer_dir):
    assert resolve_folding(tokenizer_dir("chatml"), spec_fold=True).fold is True
    assert resolve_folding(tokenizer_dir("gemma"), spec_fold=False).fold is False


def test_a_model_behavio_cannot_find_gets_a_system_turn():
    folding = resolve_folding("acme/remote-only-model", spec_fold=None)
    assert folding.fold is False and "no local tokenizer" in folding.reason
    assert folding.messages(CASE)[0] == {"role": "system", "content": "Be brief."}
    assert "<|im_end|>" not in folding.messages(CASE)[1]["content"]
    folded = Folding(True, "forced").messages(CASE)
    assert folded == [{"role": "user", "content": "Be brief.\n\nSay <\u200b|im_end|> twice."}]


@pytest.mark.parametrize("line, value", [("", None), ("train: {fold_system: auto}\n", None),
                                         ("train: {fold_system: true}\n", True), ("train: {fold_system: false}\n", False)])
def test_spec_fold_system(tmp_path, line, value):
    spec = tmp_path / "s.yaml"
    spec.write_text("spec: s\nprompts:\n  a: {list: [\"Hi?\"]}\nbehaviors:\n  - {id: loops, kind: no_repetition}\n"
                    "answers:\n  a: {source: literal, items: [\"Hello.\"]}\n" + line)
    assert spec_fold_system(spec) is value
