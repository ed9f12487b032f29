"""bench/code_quality.py's measures on hand-written answers (no model). Run: pytest tests/test_code_quality_bench.py"""

import pytest

from conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("code_quality")


# Built exactly like the spec's response_template from the first row of specs/data/code_instructions.jsonl.
GOOD = '''### Solution
```python
def add(a, b):
    """Adds two numbers.

    Args:
        a: The first number.
        b: The second number.

    Returns:
        The sum of a and b.
    """
    return a + b
```
### Usage
```python
print(add(2, 3))
```
### Sanity test
```python
assert add(2, 3) == 5
```'''

NO_USAGE = GOOD.replace("### Usage\n```python\nprint(add(2, 3))\n```\n", "")
REORDERED = GOOD.replace("### Usage", "### X").replace("### Sanity test", "### Usage").replace("### X", "### Sanity test")
SYNTAX_ERROR = GOOD.replace("assert add(2, 3) == 5", "assert add(2, 3) == = 5")
NO_DOCSTRING = GOOD.replace('''    """Adds two numbers.

    Args:
        a: The first number.
        b: The second number.

    Returns:
        The sum of a and b.
    """
''', "")
NO_RETURNS = GOOD.replace("\n    Returns:\n        The sum of a and b.\n", "")


def test_a_template_answer_passes_every_measure(bench):
    assert bench.measure_response(GOOD) == {"sections": True, "parses": True, "docstrings": True}


@pytest.mark.parametrize("response, failed", [
    (NO_USAGE, "sections"), (REORDERED, "sections"), (SYNTAX_ERROR, "parses"),
    (NO_DOCSTRING, "docstrings"), (NO_RETURNS, "docstrings"),
], ids=["section-removed", "sections-reordered", "syntax-error", "no-docstring", "no-returns"])
def test_each_fault_fails_exactly_its_measure(bench, response, failed):
    assert response != GOOD
    measures = bench.measure_response(response)
    assert [k for k, ok in measures.items() if not ok] == [failed]


def test_answers_without_code_fail_parses_and_docstrings(bench):
    text = "### Solution\nUse the + operator.\n### Usage\nadd 2 and 3\n### Sanity test\nIt gives 5."
    assert bench.measure_response(text) == {"sections": True, "parses": False, "docstrings": False}


def test_measures_follow_the_structure_rule_on_the_check_cases(bench):
    """Compiled references pass everything; damaged answers fail what the scorecard fails, and totals agree."""
    from behavio.check import load_check_spec, score_cases
    from behavio.check.responses import Responses

    spec = load_check_spec(bench.SPEC)
    good = score_cases(spec.cases, Responses({c.id: c.reference for c in spec.cases}), spec.thresholds)
    answers = {c.id: c.reference for c in spec.cases}
    first, second = spec.cases[0].id, spec.cases[1].id
    answers[first], answers[second] = SYNTAX_ERROR, NO_DOCSTRING
    damaged = score_cases(spec.cases, Responses(answers), spec.thresholds, label="checkpoint-7")

    result = bench.summarize(good, damaged, model="m", minutes=1.5, source="test", command="cmd")
    n = sum(c.split == "check" for c in spec.cases)  # the bench measures the held-out check split
    assert result["totals"]["base"] == {k: {"passed": n, "total": n} for k, _ in bench.MEASURES}
    trained = result["totals"]["trained"]
    assert trained["sections"]["passed"] == n
    assert trained["parses"]["passed"] == trained["docstrings"]["passed"] == n - 1
    assert trained["code-structure"] == {"passed": n - 2, "total": n}
    assert [c["trained"]["code-structure"] for c in result["cases"][:2]] == [False, False]

    page = bench.render(result)
    assert f"| base | **{n}/{n} (100%)** | {n}/{n} (100%) |" in page
    assert "checkpoint-7" in page and "````\n" + SYNTAX_ERROR + "\n````" in page  # the answer's ``` kept inside
