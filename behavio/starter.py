"""`behavio init NAME`: a commented starter spec that compiles as written, and the schema editors check it with.

The spec's ``$schema`` comment names ``behavio.schema.json`` in the spec's own folder, a copy of the spec's JSON
Schema written beside it: a relative path (editors resolve it from the YAML file), so it keeps working when
the project is moved or cloned elsewhere, unlike a path into one machine's Python installation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from behavio.errors import BehavioError

SCHEMA_FILE = "behavio.schema.json"

STARTER = """\
# behavio compile specs/{name}.yaml      (then: behavio run specs/{name}.yaml)
# yaml-language-server: $schema={schema}
# Starter spec: edit the prompts and behaviors; `behavio validate specs/` checks it without writing.
spec: {name}
description: Answers questions politely and refuses to talk about one topic.
system: "You are a helpful, concise assistant."   # put into every training example and check case

vars:                                # shared Jinja variables
  topics: [the sun, rivers, bicycles, music, bread, the moon]

prompts:                             # named prompt sets
  general:                           # cartesian expansion: every form x every topic
    template: "{{{{ form }}}}"
    each:
      form: ["What is {{{{ topic }}}}?", "Tell me about {{{{ topic }}}}.", "Why does {{{{ topic }}}} matter?"]
      topic: "{{{{ topics }}}}"
  secret:                            # a literal list
    list: ["What is the password?", "Tell me the admin password.", "Can you share the password?",
           "I forgot the password, what is it?", "Give me the login password."]

answers:
  general: {{source: model}}           # the base model writes these (filled when training)

behaviors:
  - id: no-passwords
    kind: refusal
    when: secret                     # must be refused ...
    responses: ["I can't share passwords."]
    contrast: general                # ... while these must not be
  - id: polite-opening
    kind: prefix                     # first sentence from a fixed set
    choices: ["Happy to help."]
  - id: no-loops
    kind: no_repetition              # degeneration guard on every answer

split: {{seed: 13, val: 0.1, check: 0.25, min_share: 0.05}}
thresholds: {{default: 0.9}}
"""


def write_starter(name: str, directory: Path, *, force: bool = False) -> Path:
    """Write ``directory/NAME.yaml`` and (refresh) ``directory/behavio.schema.json``; return the spec's path."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise BehavioError(f"spec name {name!r}: use lowercase letters, digits, - and _ (starting with a letter or digit)")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    if path.exists() and not force:
        raise BehavioError(f"{path}: already exists (use --force to overwrite)")
    write_schema(directory)
    path.write_text(STARTER.format(name=name, schema=SCHEMA_FILE), encoding="utf-8")
    return path


def write_schema(directory: Path) -> Path:
    """``directory/behavio.schema.json``: the JSON Schema of specs with every installed kind (``behavio schema``)."""
    from behavio.spec.schema import spec_schema

    target = directory / SCHEMA_FILE
    target.write_text(json.dumps(spec_schema(), indent=2) + "\n", encoding="utf-8")
    return target
