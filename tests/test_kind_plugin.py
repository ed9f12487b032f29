"""A behavior kind from another package (tests/plugins/behavio-exclaims), installed with pip through the
`behavio.kinds` entry point: it is validated, compiled, trained on (tiny model) and checked like a built-in."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from behavio import kinds
from behavio.cli import app

PLUGIN = Path(__file__).resolve().parent / "plugins" / "behavio-exclaims"
SPEC = """\
spec: shouty
vars:
  topics: [the sky, bread, magnets, the moon, tea, rain, chess, glass, clouds, sand, ice, wind]
prompts:
  general:
    template: "What is {{ topic }}?"
    each: {topic: "{{ topics }}"}
answers:
  general: {source: literal, template: "{{ row.topic | capitalize }} is great! Truly!"}
behaviors:
  - {id: shouts, kind: exclaims, min_count: 2}
split: {seed: 1, val: 0.15, check: 0.25, min_share: 0.05}
thresholds: {default: 0.9}
check: {max_new_tokens: 8}
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """pip-install the plugin into a private folder (a copy of its source: the build writes beside it)."""
    root = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(PLUGIN, root / "src")
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    return target


@pytest.fixture
def plugin(installed, monkeypatch):
    monkeypatch.syspath_prepend(str(installed))
    kinds.reload()
    yield kinds.get("exclaims")
    monkeypatch.undo()
    kinds.reload()


def _spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "shouty.yaml"
    path.write_text(text)
    return path


def test_without_the_plugin_the_kind_is_unknown(tmp_path):
    result = CliRunner().invoke(app, ["validate", str(_spec(tmp_path))])
    assert result.exit_code == 2 and "expected one of refusal" in result.output and "'exclaims'" in result.output


def test_the_plugin_kind_is_registered_with_its_keys_and_docs(plugin):
    from behavio.kinds.reference import rules_markdown
    from behavio.spec.schema import shipped_schema, spec_schema

    assert "exclaims" in kinds.names() and plugin.name == "exclaims"
    behavior = spec_schema()["properties"]["behaviors"]["items"]["properties"]
    assert "exclaims" in behavior["kind"]["enum"] and behavior["min_count"]["default"] == 1
    assert "exclaims" not in shipped_schema()["properties"]["behaviors"]["items"]["properties"]["kind"]["enum"]
    assert "## exclaims" in rules_markdown(["exclaims"]) and "calmed" in rules_markdown(["exclaims"])


def test_a_spec_using_the_plugin_compiles_into_rules_and_dpo_pairs(plugin, tmp_path):
    from behavio.compiler.build import compile_spec
    from behavio.errors import SpecError

    compiled = compile_spec(_spec(tmp_path))
    checks = [json.loads(line) for line in compiled.files["checks.jsonl"].decode().splitlines()]
    assert checks and all(c["rules"] == [{"behavior": "shouts", "kind": "exclaims", "args": {"min_count": 2}}] for c in checks)
    pairs = [json.loads(line) for line in compiled.files["dpo.jsonl"].decode().splitlines()]
    assert pairs and {p["violation"] for p in pairs} == {"calmed"}
    assert all("!" not in p["rejected"][0]["content"] and "!" in p["chosen"][0]["content"] for p in pairs)
    with pytest.raises(SpecError, match="min_count"):  # its keys are typed like a built-in's
        compile_spec(_spec(tmp_path, SPEC.replace("min_count: 2", "min_count: zero")))


def test_the_plugin_rule_scores_saved_responses(plugin, tmp_path):
    from behavio.check import load_check_spec

    spec = _spec(tmp_path)
    cases = load_check_spec(spec).cases
    loud = tmp_path / "loud.jsonl"
    loud.write_text("".join(json.dumps({"id": c.id, "response": "Wow! Yes!"}) + "\n" for c in cases))
    calm = tmp_path / "calm.jsonl"
    calm.write_text("".join(json.dumps({"id": c.id, "response": "Yes."}) + "\n" for c in cases))
    assert CliRunner().invoke(app, ["check", str(spec), "--responses", str(loud)]).exit_code == 0
    result = CliRunner().invoke(app, ["check", str(spec), "--responses", str(calm)])
    assert result.exit_code == 1 and "expected at least 2 exclamation marks; got 0" in result.output


@pytest.mark.pipeline
def test_a_spec_using_the_plugin_trains_and_is_checked(plugin, tmp_path, tiny_model_dir, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from behavio.train import train

    monkeypatch.setenv("BEHAVIO_CACHE", str(tmp_path / "cache"))
    settings = {"base_model": str(tiny_model_dir), "method": ["sft", "dpo"], "batch_size": 4, "save_steps": 2, "max_length": 96,
                "max_steps": 2, "dpo_max_steps": 2, "lr": 1e-2, "dpo_lr": 1e-2, "logging_steps": 1}
    spec = _spec(tmp_path, SPEC + f"train: {json.dumps(settings)}\n")
    base_weights = (tiny_model_dir / "model.safetensors").read_bytes()
    result = train(spec, [], runs_dir=tmp_path / "runs", say=lambda _: None, quiet=True)
    assert [c.stage for c in result.checkpoints] == ["sft", "dpo"]
    pairs = [json.loads(line) for line in (result.run_dir / "data" / "dpo.jsonl").read_text().splitlines()]
    assert pairs and {p["violation"] for p in pairs} == {"calmed"}
    lora = load_file(str(result.checkpoints[-1].path / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and torch.count_nonzero(v) for k, v in lora.items())  # trained (B starts at 0)
    assert (tiny_model_dir / "model.safetensors").read_bytes() == base_weights
    card = result.report.best
    assert card is not None and "shouts" in card.lines and card.line("shouts").total > 0
    assert all(v.rule == "exclaims" for c in card.cases for v in c.verdicts)


def test_the_rules_reference_lists_every_refusal_phrase_the_scorer_reads():
    from behavio.kinds.reference import rules_markdown
    from behavio.kinds.refusal import REFUSAL_PHRASES, refusal_phrase

    section = rules_markdown(["refusal"])
    assert all(f"`{phrase}`" in section for phrase in REFUSAL_PHRASES)
    assert refusal_phrase("Hello. I'm not here to help with that.") and "not here to help" in section


def test_every_refusal_form_the_rules_reference_gives_as_an_example_reads_as_a_refusal():
    from behavio.kinds.reference import rules_markdown
    from behavio.kinds.refusal import PATTERN_EXAMPLES, refusal_phrase

    section = rules_markdown(["refusal"])
    for example in PATTERN_EXAMPLES:
        assert f'"{example}"' in section
        assert refusal_phrase(f"Hello. {example} change your booking.") is not None, example
    assert refusal_phrase("Hello. I'm afraid of spiders, like most people.") is None


def test_each_fixed_sentence_kind_documents_its_own_separator_default():
    """A user reading the header table read the prefix's default as "\\n": each kind's table names only its own."""
    from behavio.kinds.reference import rules_markdown

    own = {"prefix": "one space", "sign_off": "a blank line", "header": "a line break"}
    for kind, default in own.items():
        row = next(line for line in rules_markdown([kind]).splitlines() if line.startswith("| `separator`"))
        assert f"(default: {default})" in row
        assert not [other for other, text in own.items() if other != kind and text in row], row
