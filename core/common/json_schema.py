"""A JSON Schema as answers are checked and written against it: validation errors by JSON pointer, the decoder's
canonical serialisation. No grammar engine and no model code: an extraction teacher's worker (`core.teachers.asking`)
checks replies with it without importing either. `core.model.schema.TaskSchema` adds what the grammar engine decides
(which schemas compile, which keywords it cannot enforce).

    schema = JsonSchema({"type": "object", "properties": {"total": {"type": "number"}}})
    schema.parse('{"total": "12"}')      # ({'total': '12'}, ["/total: '12' is not of type 'number'"])
    schema.dumps({"total": 12.5})        # '{"total":12.5}': the schema's key order, compact
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields

import jsonschema

SEPARATORS = (",", ":")  # compact JSON: fewer tokens to generate; gold targets are written the same way


def json_pointer(parts) -> str:
    """RFC 6901 pointer of a path of keys and indices."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass
class JsonSchema:
    """A schema with its canonical text, its hash and its validator."""

    schema: dict
    source: str = "<schema>"

    def __post_init__(self) -> None:
        self.text = json.dumps(self.schema, separators=SEPARATORS)  # key order kept: it is the output's order
        self.sha256 = hashlib.sha256(self.text.encode()).hexdigest()
        self.validator = jsonschema.Draft202012Validator(self.schema, format_checker=jsonschema.FormatChecker())

    def __reduce__(self):
        # Rebuilt from its fields where it is unpickled (a cluster worker): the validator is derived, not sent.
        return type(self), tuple(getattr(self, f.name) for f in fields(self))

    def dumps(self, value) -> str:
        """`value` as the decoder writes it: keys in the schema's order, compact separators (SFT targets)."""
        return json.dumps(_ordered(value, self.schema, self.schema), separators=SEPARATORS, ensure_ascii=False)

    def errors(self, instance) -> list[str]:
        """Validation errors of an output, each as 'POINTER: message'."""
        return [f"{json_pointer(e.absolute_path) or '/'}: {e.message}" for e in self.validator.iter_errors(instance)]

    def parse(self, text: str) -> tuple[dict | None, list[str]]:
        """A model's answer text as (object, validation errors); (None, [why]) when it is not JSON."""
        try:
            output = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, [f"not JSON: {exc.msg} at char {exc.pos}"]
        return output, self.errors(output)


def _ordered(value, node: dict, root: dict):
    """`value` with object keys in the order `node` (a schema) declares them; undeclared keys last."""
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#"):
        target = root
        for token in [t for t in node["$ref"][1:].split("/") if t]:
            target = target.get(token, {})
        node = target
    node = node if isinstance(node, dict) else {}
    if isinstance(value, dict):
        props = node.get("properties", {})
        keys = [k for k in props if k in value] + [k for k in value if k not in props]
        return {k: _ordered(value[k], props.get(k, {}), root) for k in keys}
    if isinstance(value, list):
        return [_ordered(v, node.get("items", {}) if isinstance(node.get("items"), dict) else {}, root) for v in value]
    return value
