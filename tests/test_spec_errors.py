"""Malformed specs: every mistake is reported as file:line:col: key.path: message, all at once."""

from __future__ import annotations

import re
import textwrap

import pytest

from behavio.compiler.build import compile_spec
from behavio.errors import SpecError

GOOD = textwrap.dedent("""\
    spec: demo
    system: "Be brief."
    vars:
      topics: [rain, snow, wind, fog, hail, sun]
    prompts:
      weather:
        template: "What is {{ topic }}?"
        each: {topic: "{{ topics }}"}
      secret:
        list: ["What's the code?", "Tell me the code.", "Give me the code.", "Code please?"]
    answers:
      weather: {source: literal, template: "It is weather."}
    behaviors:
      - id: no-code
        kind: refusal
        when: secret
        responses: ["I can't share the code."]
        contrast: weather
      - id: hello
        kind: prefix
        choices: ["Hello."]
    split: {seed: 1, val: 0.2, check: 0.25, min_share: 0.05}
    """)


def compile_text(tmp_path, text: str, name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return compile_spec(path)


def errors_of(tmp_path, text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        compile_text(tmp_path, text)
    return [str(i) for i in info.value.issues]


def test_good_spec_compiles(tmp_path):
    assert compile_text(tmp_path, GOOD).manifest["counts"]["sft"] > 0


# (description, replace-from, replace-to, expected line, expected message regex)
MISTAKES = [
    ("yaml syntax", "  topics: [rain, snow, wind, fog, hail, sun]", "  topics: [rain, snow", 5, r"YAML syntax error"),
    ("tab indentation", "      weather:", "\tweather:", 6, r"YAML syntax error"),
    ("duplicate key", "system: \"Be brief.\"", "system: \"Be brief.\"\nsystem: again", 3, r"duplicate key 'system' \(first defined at line 2\)"),
    ("unknown top-level key", "system: \"Be brief.\"", "systme: \"Be brief.\"", 2, r"unknown key 'systme' \(did you mean 'system'\?\)"),
    ("unknown prompt-set key", "        template: \"What is {{ topic }}?\"", "        templte: \"What is {{ topic }}?\"", 7, r"prompts\.weather\.templte: unknown key 'templte' \(did you mean 'template'\?\)"),
    ("unknown behavior key", "        responses: [\"I can't share the code.\"]", "        response: [\"I can't share the code.\"]", 17, r"unknown key 'response' \(did you mean 'responses'\?\)"),
    ("wrong type list", "        list: [\"What's the code?\", \"Tell me the code.\", \"Give me the code.\", \"Code please?\"]", "        list: 5", 10, r"prompts\.secret\.list: expected a list or a string, got number 5"),
    ("wrong type string", "system: \"Be brief.\"", "system: [1, 2]", 2, r"system: expected a string, got"),
    ("bad kind", "        kind: prefix", "        kind: prefx", 20, r"expected one of .*got 'prefx' \(did you mean 'prefix'\?\)"),
    ("missing required", "spec: demo\n", "", 1, r"missing required key 'spec'"),
    ("bad spec id", "spec: demo", "spec: Demo Spec", 1, r"'Demo Spec' does not match"),
    ("undefined prompt set", "        when: secret", "        when: secrets", 16, r"prompt set 'secrets' is not defined under prompts \(did you mean 'secret'\?\)"),
    ("undefined contrast set", "        contrast: weather", "        contrast: wether", 18, r"prompt set 'wether' is not defined"),
    ("answers for unknown set", "      weather: {source: literal", "      weathr: {source: literal", 12, r"answers for undefined prompt set 'weathr'"),
    ("undefined jinja variable", "        template: \"What is {{ topic }}?\"", "        template: \"What is {{ topik }}?\"", 7, r"'topik' is undefined"),
    ("undefined each list", "        each: {topic: \"{{ topics }}\"}", "        each: {topic: \"{{ topicz }}\"}", 8, r"'topicz' is undefined"),
    ("each not a list", "        each: {topic: \"{{ topics }}\"}", "        each: {topic: \"{{ topics[0] }}\"}", 8, r"expected a list of values"),
    ("jinja internals", "        template: \"What is {{ topic }}?\"", "        template: \"{{ ''.__class__.__mro__ }}\"", 7, r"unsafe"),
    ("jinja attr filter", "        template: \"What is {{ topic }}?\"", "        template: \"{{ topic|attr('__class__') }}\"", 7, r"unsafe"),
    ("huge range", "        template: \"What is {{ topic }}?\"", "        template: \"{{ range(10**8)|length }}\"", 7, r"range of 100000000 items"),
    ("jinja syntax", "        template: \"What is {{ topic }}?\"", "        template: \"What is {{ topic }?\"", 7, r"template error"),
    ("python yaml tag", "system: \"Be brief.\"", "system: !!python/object/apply:os.system [\"echo hi\"]", 2, r"YAML tag .* is not allowed"),
    ("two sources", "        list: [\"What's the code?\"", "        template: x\n        list: [\"What's the code?\"", 10, r"exactly one of list, template, file, frames"),
    ("missing file", "        list: [\"What's the code?\", \"Tell me the code.\", \"Give me the code.\", \"Code please?\"]", "        file: nope.jsonl", 10, r"nope.jsonl: no such file \(looked for .*nope.jsonl\)"),
    ("threshold for unknown behavior", "split: {", "thresholds: {hellp: 0.9}\nsplit: {", 22, r"no behavior or behavior part named 'hellp' \(did you mean 'hello'\?\)"),
    ("threshold rate and of_base", "split: {", "thresholds: {hello: {rate: 0.9, of_base: 0.9}}\nsplit: {", 22, r"thresholds\.hello: give 'rate' or 'of_base', not both"),
    ("threshold mapping, bad value", "split: {", "thresholds: {hello: {of_base: 2}}\nsplit: {", 22, r"thresholds\.hello\.of_base: 2 is greater than the maximum of 1"),
    ("threshold of a wrong type", "split: {", "thresholds: {hello: fast}\nsplit: {", 22, r"thresholds\.hello: expected a number or a mapping, got string 'fast'"),
    ("duplicate behavior id", "      - id: hello", "      - id: no-code", 19, r"duplicate behavior id 'no-code'"),
    ("key of other kind", "        choices: [\"Hello.\"]", "        choices: [\"Hello.\"]\n        responses: [\"x\"]", 22, r"`responses` does not apply to kind prefix"),
    ("regex without pattern", "        kind: prefix\n        choices: [\"Hello.\"]", "        kind: regex", 19, r"a regex behavior needs `pattern`"),
    ("refusal without responses", "        responses: [\"I can't share the code.\"]\n", "", 14, r"a refusal behavior needs `responses`"),
    ("split share out of range", "val: 0.2", "val: 2", 22, r"split\.val: 2 is greater than the maximum"),
    ("too small set", "        list: [\"What's the code?\", \"Tell me the code.\", \"Give me the code.\", \"Code please?\"]", "        list: [\"What's the code?\"]", 10, r"has 1 distinct prompt\(s\); it needs at least 3"),
    ("set without answers", "      weather: {source: literal, template: \"It is weather.\"}", "      {}", 7, r"prompt set 'weather' has no answers"),
    ("min share", "min_share: 0.05", "min_share: 0.6", 14, r"behavior 'no-code' is .* below split.min_share 60%: upsample it with `repeat: N` on prompts.secret"),
]


@pytest.mark.parametrize("desc,old,new,line,pattern", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_mistake_is_located(tmp_path, desc, old, new, line, pattern):
    old, new = _undent(old), _undent(new)
    assert old in GOOD, desc
    text = GOOD.replace(old, new, 1)
    errors = errors_of(tmp_path, text)
    matching = [e for e in errors if re.search(pattern, e)]
    assert matching, f"{desc}: no error matches {pattern!r}; got {errors}"
    where = re.match(r"^(.+?):(\d+):(\d+): ", matching[0])
    assert where, matching[0]
    assert where.group(1).endswith("spec.yaml")
    assert int(where.group(2)) == line, f"{desc}: expected line {line}: {matching[0]}"


def _undent(text: str) -> str:
    """MISTAKES are written at the indentation of GOOD's source; drop the 4 spaces dedent removed."""
    return re.sub(r"(?m)^    ", "", text)


def test_distinct_mistakes_counted():
    assert len({m[0] for m in MISTAKES}) >= 20


def test_all_errors_reported_at_once(tmp_path):
    text = GOOD.replace("systme", "x").replace("system:", "systme:").replace("kind: prefix", "kind: prefx")
    text = text.replace("split: {", "thresholds: {nope: 2}\nsplit: {")
    errors = errors_of(tmp_path, text)
    assert len(errors) >= 3, errors
    assert any("systme" in e for e in errors) and any("prefx" in e for e in errors) and any("thresholds.nope" in e for e in errors)


def test_alias_bomb_is_rejected(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))
    errors = errors_of(tmp_path, bomb + GOOD)
    assert any("alias bomb" in e for e in errors), errors


def test_not_a_mapping(tmp_path):
    errors = errors_of(tmp_path, "- just\n- a list\n")
    assert len(errors) == 1
    assert errors[0].endswith("spec.yaml:1:1: a spec must be a mapping with keys spec, prompts, behaviors (got list)")


def test_bad_answers_file_line_is_named(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"prompt": "x", "response": "y"}\nnot json\n', encoding="utf-8")
    text = GOOD.replace('weather: {source: literal, template: "It is weather."}', "weather: {source: file, path: a.jsonl}")
    errors = errors_of(tmp_path, text)
    assert any("a.jsonl:2: not valid JSON" in e for e in errors), errors


def test_failed_compile_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from behavio.cli import app

    (tmp_path / "bad.yaml").write_text(GOOD.replace("kind: prefix", "kind: prefx"), encoding="utf-8")
    result = CliRunner().invoke(app, ["compile", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "gen")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert not (tmp_path / "gen" / "demo").exists()


def test_a_probe_yaml_read_as_a_mapping_is_named_with_its_line(tmp_path):
    """An unquoted probe with ": " in it becomes a mapping in YAML: the error names the probe file's line and says
    to quote it, instead of claiming the list is missing."""
    (tmp_path / "probes.yaml").write_text('refuse:\n  - "What is the code?"\n  - tell me: what is the code\n')
    text = GOOD + "probes:\n  secret: {file: probes.yaml, key: refuse}\n"
    [error] = errors_of(tmp_path, text)
    assert "probes.yaml:3: item 2 under 'refuse' is a mapping, not a text: quote the line" in error
    (tmp_path / "probes.yaml").write_text('refuse:\n  - "What is the code?"\n  - "tell me: what is the code"\n')
    assert compile_text(tmp_path, text).manifest["counts"]["checks"] > 0
