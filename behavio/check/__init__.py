"""The check engine: generate answers to check cases and score them rule by rule."""
