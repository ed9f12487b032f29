"""The one Jinja environment behavio renders spec text with: sandboxed, strict, bounded.

Spec templates come from users (and from strangers' specs), so rendering must never reach
Python internals, never run for ever and never build gigantic strings:
- ImmutableSandboxedEnvironment blocks ``__class__``/``__globals__``, ``|attr`` escapes and
  ``str.format`` tricks, and forbids mutating lists/dicts;
- StrictUndefined turns a misspelled variable into an error instead of an empty string;
- ``range``, ``*``, ``**`` and ``%`` and width-taking filters are bounded; output is capped.
"""

from __future__ import annotations

import re
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from behavio.errors import did_you_mean

MAX_OUTPUT_CHARS = 200_000
MAX_RANGE = 10_000
MAX_REPEAT_CHARS = 100_000
_WIDTH = re.compile(r"%[-+ #0]*(\d+)")


class RenderLimitError(SecurityError):
    """A template tried to do too much work or build too much text."""


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Sandboxed environment with size limits on the operators that can blow up."""

    intercepted_binops = frozenset(["*", "**", "%"])

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
        self.globals = {"range": _bounded_range, "dict": dict, "lipsum": None, "cycler": None, "joiner": None, "namespace": None}
        self.globals = {k: v for k, v in self.globals.items() if v is not None}
        for name in ("center", "indent", "wordwrap", "truncate", "format"):
            self.filters.pop(name, None)

    def call_binop(self, context, operator, left, right):  # noqa: D401 - jinja hook
        if operator == "**":
            if not isinstance(right, (int, float)) or abs(right) > 64 or (isinstance(left, (int, float)) and abs(left) > 1e6):
                raise RenderLimitError("exponent too large in template")
            return left**right
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_REPEAT_CHARS:
                    raise RenderLimitError("repetition builds too much text in template")
            return left * right
        if operator == "%":
            if isinstance(left, str):
                if any(int(w) > 1000 for w in _WIDTH.findall(left)):
                    raise RenderLimitError("format width too large in template")
            return left % right
        return super().call_binop(context, operator, left, right)


def _bounded_range(*args):
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise RenderLimitError(f"range of {len(r)} items is larger than the limit {MAX_RANGE}")
    return r


@lru_cache(maxsize=1)
def environment() -> BoundedSandbox:
    return BoundedSandbox()


@lru_cache(maxsize=4096)
def _compiled(source: str):
    return environment().from_string(source)


class TemplateProblem(Exception):
    """A template that failed to compile or render, with a readable reason."""


_PLAIN_VARIABLE = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")


def render(source: str, context: dict) -> str:
    """Render ``source`` with ``context``; raise TemplateProblem with a one-line reason."""
    if "{" not in source and "%" not in source:
        return source
    plain = _PLAIN_VARIABLE.match(source)
    if plain and isinstance(context.get(plain.group(1)), str):  # fast path: "{{ name }}" naming a string
        return context[plain.group(1)]
    try:
        out = _compiled(source).render(context)
    except (RenderLimitError, SecurityError) as exc:
        raise _unsafe(exc) from None
    except UndefinedError as exc:
        raise TemplateProblem(f"template error: {exc.message or exc}{_available(exc, source, context)}") from None
    except TemplateError as exc:
        line = f" (template line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        raise TemplateProblem(f"template error: {exc.message or exc}{line}") from None
    except RecursionError:
        raise TemplateProblem("template recursion too deep") from None
    except (TypeError, ValueError, ArithmeticError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise TemplateProblem(f"template error: {type(exc).__name__}: {exc}") from None
    if len(out) > MAX_OUTPUT_CHARS:
        raise TemplateProblem(f"template output longer than {MAX_OUTPUT_CHARS} characters")
    return out


def _unsafe(exc: SecurityError) -> TemplateProblem:
    """A template stopped by the sandbox: too much work (RenderLimitError) or reaching something unsafe."""
    if isinstance(exc, RenderLimitError):
        return TemplateProblem(f"template rejected: {exc}")
    return TemplateProblem(f"template tried to reach something unsafe: {exc}")


_UNDEFINED = re.compile(r"has no attribute '([^']+)'|'([^']+)' is undefined")


def _available(exc: UndefinedError, source: str, context: dict) -> str:
    """What the template could have used instead of an undefined name or ``row`` field, and the template line."""
    message = str(exc.message or exc)
    match = _UNDEFINED.search(message)
    if match is None:
        return ""
    name = match.group(1) or match.group(2)
    if match.group(1):  # row.<field> (or another mapping's key)
        what, options = "row fields", sorted(context.get("row") or {}) if isinstance(context.get("row"), dict) else []
    else:
        what, options = "names", sorted(k for k in context if not k.startswith("_"))
    hint = did_you_mean(name, options)
    where = next((f"; in template line {i}: {text.strip()[:80]!r}" for i, text in enumerate(source.splitlines(), 1)
                  if re.search(rf"\b{re.escape(name)}\b", text)), "")
    return f"{hint}; available {what}: {', '.join(options) or '(none)'}{where}"


_EXPR = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.S)


def evaluate(source: str, context: dict):
    """Evaluate ``'{{ expr }}'`` to a native value (a list for ``each``); plain text is returned as is."""
    match = _EXPR.match(source)
    if not match or "}}" in match.group(1) or "{{" in match.group(1):
        return render(source, context)
    try:
        value = environment().compile_expression(match.group(1), undefined_to_none=False)(**context)
    except (RenderLimitError, SecurityError) as exc:
        raise _unsafe(exc) from None
    except TemplateError as exc:
        raise TemplateProblem(f"template error: {exc.message or exc}") from None
    except (RecursionError, TypeError, ValueError, ArithmeticError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise TemplateProblem(f"template error: {type(exc).__name__}: {exc}") from None
    if isinstance(value, StrictUndefined):
        raise TemplateProblem(f"template error: {value._undefined_message}")
    return value
