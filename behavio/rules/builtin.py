"""Import every built-in rule module so each registers its kind (see ``behavio.rules.score_rule``)."""

from behavio.rules import assertions, no_repetition, on_topic, prefix, refusal, structure  # noqa: F401
