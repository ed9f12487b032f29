"""The spec reference (docs/spec.md) rendered from the JSON Schema, so the docs cannot drift."""

from __future__ import annotations

import json

from behavio.spec.schema import shipped_schema

HEADER = """\
# Spec reference

<!-- Generated from behavio/spec/schema.json by `behavio schema --markdown > docs/spec.md`; a test keeps it fresh. -->

Every spec is one YAML file. Editors validate and complete it when its first lines include
`# yaml-language-server: $schema=<path>`, the path relative to the spec: `behavio init` writes the schema
as `behavio.schema.json` beside the spec it creates (`behavio schema > specs/behavio.schema.json` refreshes it
after an upgrade); specs inside behavio's own repository use `../behavio/spec/schema.json`. Unknown keys are errors. Every string marked *Jinja* is rendered in a sandbox
with strict undefined variables; `vars` are available everywhere, `row` holds the fields of the
prompt's source row (file columns, `each` values -- rendered: a form `"Do you sell mugs in {{ color }}?"` comes as
"Do you sell mugs in red?" --, or a frame set's `subject`: an answer template such as
`"{{ answers_by_subject[row.subject] }}"` gives each subject of a frame set its own written answer), `prompt`
the prompt text.
"""


def type_name(node: dict) -> str:
    """A schema node's type as the reference tables show it."""
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    if "oneOf" in node:
        return " or ".join(type_name(o) for o in node["oneOf"])
    t = node.get("type", "any")
    if t == "array":
        return f"list of {type_name(node.get('items', {}))}"
    return str(t)


def _rows(props: dict, prefix: str = "") -> list[str]:
    lines = []
    for key, node in props.items():
        default = f"`{json.dumps(node['default'])}`" if "default" in node else ""
        desc = node.get("description", "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{prefix}{key}` | {type_name(node)} | {default} | {desc} |")
        if node.get("type") == "object" and "properties" in node and key not in ("json_schema",):
            lines += _rows(node["properties"], f"{prefix}{key}.")
    return lines


def _table(title: str, intro: str, props: dict) -> str:
    head = ["", f"## {title}", "", intro, "", "| key | type | default | meaning |", "|---|---|---|---|"]
    return "\n".join(head + _rows(props)) + "\n"


def _example() -> str:
    from behavio.starter import SCHEMA_FILE, STARTER

    text = STARTER.format(name="my-spec", path="specs/my-spec.yaml", schema=SCHEMA_FILE)
    return ("\n## Example\n\nWhat `behavio init my-spec` writes; every shipped spec in `specs/` demonstrates more "
            "features (natural frames, probes, file sources, structure with a response template).\n\n```yaml\n" + text + "```\n")


def _warnings() -> str:
    from behavio.spec.warning_names import shipped_catalog

    rows = [f"| `{name}` | {text} |" for name, text in shipped_catalog().items()]
    return "\n".join(["", "## Warnings", "",
                      "Every warning prints its name (`warning[recall-only]: specs/x.yaml:18:5: ...`). A spec accepts the "
                      "ones it means by listing their names under `ignore_warnings`; `--strict` (validate, compile, run, "
                      "check) turns every other warning into an error, for CI. Behavior kinds from plugins add their own.",
                      "", "| name | meaning |", "|---|---|", *rows]) + "\n"


def reference_markdown() -> str:
    schema = shipped_schema()
    props = schema["properties"]
    top = {k: v for k, v in props.items() if k not in ("prompts", "answers", "behaviors", "probes")}
    parts = [HEADER, _example(),
             _table("Top level", schema["description"], {**top, "prompts": props["prompts"], "answers": props["answers"],
                                                          "behaviors": props["behaviors"], "probes": props["probes"]}),
             _table("Prompt set (`prompts.<name>`)", props["prompts"]["additionalProperties"]["description"],
                    props["prompts"]["additionalProperties"]["properties"]),
             _table("Answer source (`answers.<prompt set>`)", props["answers"]["additionalProperties"]["description"],
                    props["answers"]["additionalProperties"]["properties"]),
             _table("Behavior (`behaviors[]`)", "Which keys each kind takes is checked; docs/rules.md says, kind by kind, what it "
                    "checks and which rejected answers it writes as DPO pairs.",
                    props["behaviors"]["items"]["properties"]),
             _warnings()]
    return "\n".join(parts)
