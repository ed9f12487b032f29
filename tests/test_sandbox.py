"""Templates from specs run in a bounded sandbox: escapes and resource bombs are clean errors."""

from __future__ import annotations

import json

import pytest

from behavio.compiler.build import compile_spec
from behavio.compiler.sandbox import TemplateProblem, render
from behavio.errors import SpecError

PAYLOADS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.system('echo pwned') }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ self.__init__.__globals__ }}",
    "{{ x|attr('__class__') }}",
    "{{ '{0.__class__.__mro__}'|attr('format')(x) }}",
    "{{ '{0.__class__.__mro__}'.format(x) }}",
    "{{ '{a.__class__}'.format_map({'a': x}) }}",
    "{{ range(10**9)|list|length }}",
    "{{ 'a' * 10**9 }}",
    "{{ 9**9**9 }}",
    "{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}",
    "{{ '%099999999d' % 1 }}",
    "{{ x|center(10**9) }}",
    "{% set d = {} %}{{ d.update({'a': 1}) }}",
    "{{ config }}",
    "{{ request.application.__globals__ }}",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_is_a_clean_error(payload):
    with pytest.raises(TemplateProblem):
        render(payload, {"x": "hi"})


PLACES = {
    "system": lambda s, p: s.replace('system: "Be brief."', f"system: {json.dumps(p)}"),
    "list item": lambda s, p: s.replace('list: ["What\'s the code?"', f'list: [{json.dumps(p)}'),
    "template": lambda s, p: s.replace('template: "What is {{ topic }}?"', f"template: {json.dumps(p)}"),
    "each value": lambda s, p: s.replace('each: {topic: "{{ topics }}"}', f"each: {{topic: {json.dumps(p)}}}"),
    "answer template": lambda s, p: s.replace('template: "It is weather."', f"template: {json.dumps(p)}"),
    "refusal response": lambda s, p: s.replace('responses: ["I can\'t share the code."]', f"responses: [{json.dumps(p)}]"),
    "prefix choice": lambda s, p: s.replace('choices: ["Hello."]', f"choices: [{json.dumps(p)}]"),
}


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("payload", PAYLOADS[:6] + PAYLOADS[8:12])
def test_payload_in_every_spec_place_is_rejected_with_location(tmp_path, place, payload):
    from test_spec_errors import GOOD

    text = PLACES[place](GOOD, payload)
    assert text != GOOD
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        compile_spec(path)
    first = str(info.value.issues[0])
    assert first.startswith(str(path)) or "spec.yaml:" in first
    assert "pwned" not in first


def test_honest_templates_still_work():
    assert render("{{ a|upper }} {{ b|join(', ') }} {% for i in range(3) %}{{ i }}{% endfor %}", {"a": "x", "b": ["1", "2"]}) == "X 1, 2 012"
