"""What the ``inspect_ai`` entry point loads: importing the task registers ``behavio/spec``."""

from behavio.inspect_eval.task import spec  # noqa: F401
