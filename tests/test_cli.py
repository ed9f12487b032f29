"""The command line: exit codes, messages without tracebacks, init/validate/schema, docs freshness."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from behavio.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_every_command_has_help():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    listing = result.output.split("Commands:")[1]
    commands = [line.split()[0] for line in listing.splitlines() if line.startswith("  ") and line.split()]
    assert {"compile", "validate", "init", "schema"} <= set(commands)
    for command in commands:
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0, command
        assert "Usage" in sub.output


def test_validate_shipped_specs():
    result = runner.invoke(app, ["validate", str(ROOT / "specs")])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_validate_names_the_subjects_held_out_of_training():
    held = json.loads((ROOT / "generated" / "kestrel_mobile" / "manifest.json").read_text())["held_out_subjects"]
    result = runner.invoke(app, ["validate", str(ROOT / "specs" / "kestrel_mobile.yaml")])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"kestrel_mobile: {len(held)} subject(s) held out of training" in said
    assert all(repr(s) in said for s in held) and "worded two ways" in said


def test_validate_counts_the_probes_of_each_prompt_set():
    """Each probe list's count, by the set whose rules score it: a list that did not arrive shows."""
    cases = [json.loads(line) for line in (ROOT / "generated" / "kestrel_mobile" / "checks.jsonl").read_text().splitlines()]
    counts: dict[str, int] = {}
    for case in cases:
        if case["split"] == "probe":
            counts[case["prompt_set"]] = counts.get(case["prompt_set"], 0) + 1
    result = runner.invoke(app, ["validate", str(ROOT / "specs" / "kestrel_mobile.yaml")])
    said = " ".join(result.output.split())
    assert len(counts) >= 3
    assert f"kestrel_mobile: {sum(counts.values())} probes, scored by the rules of their prompt set: " in said
    assert all(f"{name} {n}" in said for name, n in counts.items())


def test_validate_strict_still_names_the_held_out_subjects_when_a_warning_fails_it(tmp_path):
    """A README-only user whose spec failed --strict on a warning could not see which subjects were held out."""
    text = (ROOT / "specs" / "kestrel_mobile.yaml").read_text()
    without_probes = text[:text.index("\nprobes:")] + text[text.index("\nthresholds:"):]  # unprobed: a warning
    (tmp_path / "data").symlink_to(ROOT / "specs" / "data")
    (tmp_path / "kestrel_mobile.yaml").write_text(without_probes)
    result = runner.invoke(app, ["validate", str(tmp_path / "kestrel_mobile.yaml"), "--strict"])
    said = " ".join(result.output.split())
    assert result.exit_code != 0 and "unprobed" in said and "spec(s) valid" not in said
    assert "kestrel_mobile:" in said and "held out of training" in said


def test_init_writes_a_spec_that_compiles(tmp_path):
    result = runner.invoke(app, ["init", "my-bot", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    spec = tmp_path / "my-bot.yaml"
    assert spec.read_text().startswith(f"# behavio compile {spec.as_posix()}  ")  # the path it was written to
    strict = runner.invoke(app, ["validate", str(spec), "--strict"])
    assert strict.exit_code == 0, strict.output  # a starter that shows what good looks like: no warning
    compiled = runner.invoke(app, ["compile", str(spec), "--out", str(tmp_path / "gen")], terminal_width=200)
    assert compiled.exit_code == 0, compiled.output
    assert (tmp_path / "gen" / "my-bot" / "sft.jsonl").stat().st_size > 0
    counts = json.loads((tmp_path / "gen" / "my-bot" / "manifest.json").read_text())["counts"]
    row = next(line for line in compiled.output.splitlines() if line.split() and line.split()[0] == "my-bot")
    cells = row.split()
    assert cells[4] == str(counts["checks"]) and 0 < int(cells[5]) < counts["checks"]  # the manifest's count, probes in it
    assert cells[7] == "0"  # no warning printed, none accepted
    again = runner.invoke(app, ["init", "my-bot", "--dir", str(tmp_path)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_init_rejects_bad_name(tmp_path):
    result = runner.invoke(app, ["init", "My Bot", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "lowercase" in result.output


def test_missing_path_is_a_clean_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "behavio", "compile", str(tmp_path / "nope")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "no such file or folder" in result.stderr and "Traceback" not in result.stderr


def test_bad_spec_exit_code_and_message_without_traceback(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("spec: x\nprompts: {a: {list: [q]}}\nbehaviors:\n  - id: b\n    kind: nope\n")
    result = subprocess.run([sys.executable, "-m", "behavio", "compile", str(spec), "--out", str(tmp_path / "g")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{spec}:5:11: behaviors[0].kind: expected one of" in result.stderr


def test_schema_is_json_and_docs_are_fresh():
    result = runner.invoke(app, ["schema"])
    assert json.loads(result.output)["title"] == "behavio spec"
    markdown = runner.invoke(app, ["schema", "--markdown"]).output
    assert (ROOT / "docs" / "spec.md").read_text() == markdown, "docs/spec.md is stale: behavio schema --markdown > docs/spec.md"
    rules = runner.invoke(app, ["schema", "--rules"]).output
    assert (ROOT / "docs" / "rules.md").read_text() == rules, "docs/rules.md is stale: behavio schema --rules > docs/rules.md"


def test_shipped_schema_is_generated_from_the_kinds():
    from behavio import kinds
    from behavio.spec.schema import shipped_text

    assert (ROOT / "behavio" / "spec" / "schema.json").read_text() == shipped_text(), \
        "behavio/spec/schema.json is stale: python -c 'from behavio.spec.schema import shipped_text; print(shipped_text(), end=\"\")' > behavio/spec/schema.json"
    behavior = json.loads(shipped_text())["properties"]["behaviors"]["items"]["properties"]
    assert behavior["kind"]["enum"] == list(kinds.BUILTIN)
    assert all(key in behavior for name in kinds.BUILTIN for key in kinds.get(name).keys)


def test_compile_twice_reports_unchanged(tmp_path):
    args = ["compile", str(ROOT / "specs" / "support_desk.yaml"), "--out", str(tmp_path)]
    assert "written" in runner.invoke(app, args).output
    assert "unchanged" in runner.invoke(app, args).output


def test_compile_counts_its_warnings_and_names_those_the_spec_accepts(tmp_path):
    """A clean compile says 0 warnings; a spec that accepts a raised warning by name says +1 and names it."""
    import re

    def row(spec: str) -> tuple[str, str]:
        out = runner.invoke(app, ["compile", str(ROOT / "specs" / spec), "--out", str(tmp_path)], terminal_width=200).output
        line = next(l for l in out.splitlines() if l.split() and l.split()[-1] in ("written", "unchanged"))
        return re.split(r"\s{2,}", line.strip())[-2], out

    clean, _ = row("kite_couriers.yaml")
    assert clean == "0"
    accepted, out = row("trail_guide.yaml")
    assert accepted == "0 +1" and "trail-guide: accepted by name: few-probes" in out


def test_frames_lists_the_libraries_and_reads_a_subject_in_every_frame():
    listing = runner.invoke(app, ["frames"])
    assert listing.exit_code == 0, listing.output
    assert {"advice", "howto", "permission", "pet", "pets", "problems", "questions", "requests", "support"} <= set(listing.output.split())
    shown = runner.invoke(app, ["frames", "support", "--subject", "my invoice"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()[1:]
    assert len(lines) == 42 and all("my invoice" in line and "{{" not in line for line in lines)
    unknown = runner.invoke(app, ["frames", "nope"])
    assert unknown.exit_code == 2 and "available: advice, can_i, howto, permission" in unknown.output and "Traceback" not in unknown.output
