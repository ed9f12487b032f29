"""Unit tests for the ``structure`` rule. Run: pytest tests/test_rules_structure.py"""

import pytest

from behavio.errors import BehavioError
from behavio.kinds import score_rule

SECTIONS = ["### Solution", "### Usage", "### Sanity test"]
CODE = {"language": "python", "must_parse": True, "docstring": ["Args", "Returns"]}

GOOD = '''### Solution
```python
def add(a, b):
    """Add two numbers.

    Args:
        a: first number.
        b: second number.

    Returns:
        The sum.
    """
    return a + b
```
### Usage
```python
print(add(1, 2))
```
### Sanity test
```python
def test_add():
    """Check add on small numbers."""
    assert add(2, 2) == 4
```
'''


def check(response, **args):
    return score_rule("structure", response, args, {}, True)


def test_good_response_passes_every_check():
    result = check(GOOD, sections=SECTIONS, code=CODE)
    assert result.passed and result.score == 1.0, result.explanation


def test_sections_match_whole_lines_after_stripping():
    assert check("  ### Solution  \ntext\n### Usage\n", sections=["### Solution", "### Usage"]).passed
    assert not check("See ### Solution below\n### Usage\n", sections=["### Solution", "### Usage"]).passed


def test_missing_section():
    response = GOOD.replace("### Usage\n", "")
    result = check(response, sections=SECTIONS)
    assert not result.passed and result.score == pytest.approx(2 / 3)
    assert "missing section '### Usage'" in result.explanation


def test_sections_out_of_order():
    response = "### Usage\nx\n### Solution\ny\n### Sanity test\nz\n"
    result = check(response, sections=SECTIONS)
    assert not result.passed
    assert "section '### Usage' out of order" in result.explanation


def test_code_syntax_error_names_block_and_line():
    broken = GOOD.replace("print(add(1, 2))", "print(add(1, 2)")
    result = check(broken, sections=SECTIONS, code=CODE)
    assert not result.passed and 0 < result.score < 1
    assert "python block 2 SyntaxError at line 1" in result.explanation


def test_missing_docstring_section():
    response = GOOD.replace("    Returns:\n        The sum.\n", "")
    result = check(response, code=CODE)
    assert not result.passed
    assert "function add docstring lacks Returns" in result.explanation


def test_missing_docstring():
    response = GOOD.replace('    """Check add on small numbers."""\n', "")
    result = check(response, code=CODE)
    assert not result.passed and "function test_add has no docstring" in result.explanation


def test_no_args_or_returns_needed_without_parameters_or_return_value():
    code = '```python\nclass Counter:\n    def reset(self):\n        """Reset."""\n        self.n = 0\n```\n'
    assert check(code, code=CODE).passed
    returns = '```python\ndef answer():\n    """The answer."""\n    return 42\n```\n'
    result = check(returns, code=CODE)
    assert not result.passed and "function answer docstring lacks Returns" in result.explanation
    args = '```python\ndef show(x):\n    """Print x."""\n    print(x)\n```\n'
    assert "function show docstring lacks Args" in check(args, code=CODE).explanation


def test_code_required_when_set():
    result = check("### Solution\nJust add the numbers.\n", code=CODE)
    assert not result.passed and "no python code block" in result.explanation


def test_untagged_block_used_when_no_python_tag_and_other_languages_ignored():
    assert check("```\nx = 1\n```\n", code={"language": "python", "must_parse": True}).passed
    mixed = "```bash\npip install $$ nonsense(\n```\n```py\nx = 1\n```\n"
    assert check(mixed, code={"language": "python", "must_parse": True}).passed


def test_unterminated_block_still_checked():
    result = check("```python\ndef f(:\n", code={"language": "python", "must_parse": True})
    assert not result.passed and "SyntaxError" in result.explanation


SCHEMA = {"type": "object", "required": ["name", "age"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}}


def test_json_schema_valid_fenced_and_bare():
    assert check('Here you go:\n```json\n{"name": "Ada", "age": 36}\n```\n', json_schema=SCHEMA).passed
    assert check('  {"name": "Ada", "age": 36}\n', json_schema=SCHEMA).passed


def test_json_schema_invalid():
    result = check('```json\n{"name": "Ada", "age": -1}\n```', json_schema=SCHEMA)
    assert not result.passed and result.score == 0.0
    assert "$.age" in result.explanation and "minimum" in result.explanation
    missing = check('{"name": "Ada"}', json_schema=SCHEMA)
    assert not missing.passed and "'age' is a required property" in missing.explanation


def test_json_not_parseable():
    result = check("Sure! The name is Ada.", json_schema=SCHEMA)
    assert not result.passed and "invalid JSON at line 1" in result.explanation


def test_bad_schema_is_a_user_error():
    with pytest.raises(BehavioError, match="invalid json_schema"):
        check("{}", json_schema={"type": "no-such-type"})


def test_no_requirements_passes():
    assert check("anything").passed
