"""Budget-aware closing: a schema-constrained answer that validates within any `max_new_tokens`.

A grammar engine masks the tokens that cannot continue a valid document, but it cannot see the
budget: a decode that runs out inside a string leaves JSON that does not parse (measured: 49% valid
on a held-out nested schema at 320 tokens). `JsonPrefix` follows the answer as it is written,
against the schema, and knows at every step the shortest text that closes it validly: the open
string finished (its enum value, pattern, or minimum length met), the object's remaining required
members with their shortest values, optional members dropped, arrays ended at `minItems`. The
decoder (`GrammarMask` with a `BudgetCloser`) looks one token ahead: a token is taken only if what
it leaves can still be closed, with the end-of-sequence token, inside the remaining budget;
otherwise the closing is forced, token by token, after XGrammar itself has accepted it. So every
answer ends inside the budget and validates, and the answers that were cut say so.

Greedy answers are untouched while the budget is not tight: the closer changes nothing until the
token the model chose would leave too little room.

    prefix = JsonPrefix(schema.schema)
    prefix.feed('{"doc_type":"invoice","number":"INV-1')
    prefix.closing()          # '","date":"0000-00-00","vendor":{"name":"a","country":"DE"},...}'
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace

import regex  # partial matching (`partial=True`): can this text still become a match?

SEPARATORS = (",", ":")
# The order in which a string is padded to satisfy its pattern or length: closing characters first, so a
# string ends as soon as it may; then the characters patterns most often ask for.
_PAD = "1aA-.:@_ 0"
_PAD += "".join(c for c in map(chr, range(32, 127)) if c not in _PAD and c not in '"\\')
_FORMATS = {  # the shortest text of each format XGrammar knows, written as patterns
    "date": r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
    "time": r"[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
    "date-time": r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
    "email": r"[a-z]+@[a-z]+\.[a-z]+",
    "ipv4": r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}",
    "uuid": r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "uri": r"[a-z]+:[a-z]+",
}
_FORMAT_EXAMPLES = {
    "date": "2000-01-01",
    "time": "00:00:00Z",
    "date-time": "2000-01-01T00:00:00Z",
    "email": "a@b.co",
    "ipv4": "0.0.0.0",
    "uuid": "00000000-0000-0000-0000-000000000000",
    "uri": "a:b",
}
_NUMBER = regex.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_INTEGER = regex.compile(r"-?(0|[1-9][0-9]*)")


class Unsupported(Exception):
    """A part of the schema the closer does not model (allOf, prefixItems, ...): the decoder then runs as without it."""


def _dumps(value) -> str:
    return json.dumps(value, separators=SEPARATORS, ensure_ascii=False)


@dataclass
class _Frame:
    kind: str  # object | array | string | scalar | enum
    nodes: list[dict]  # what this value may be; a union keeps several until its text rules some out
    state: str = "start"  # object: start|key|colon|value|after|comma; array: start|after|comma
    text: str = ""  # a string's, scalar's or enum's characters so far (an object's: the key being written)
    seen: tuple[str, ...] = ()  # object: the keys written
    key: str = ""  # object: the key whose value is being written
    count: int = 0  # array: items written
    escape: bool = False  # string/key: the last character was a backslash
    choices: tuple[str, ...] = field(default=())  # enum: the allowed values as JSON text


class JsonPrefix:
    """The state of a compact JSON answer as it is written under a JSON Schema, and its shortest valid closing."""

    def __init__(self, schema: dict) -> None:
        self.root = schema
        self.stack: list[_Frame] = []
        self.done = False
        self.broken = False  # text the schema does not explain (or an unsupported part): no closing is known
        self._shortest: dict[int, tuple[dict, str | None]] = {}

    def clone(self) -> JsonPrefix:
        other = JsonPrefix.__new__(JsonPrefix)
        other.root, other.done, other.broken, other._shortest = self.root, self.done, self.broken, self._shortest
        other.stack = [replace(f) for f in self.stack]
        return other

    # -- following the text ------------------------------------------------------------------
    def feed(self, text: str) -> JsonPrefix:
        for char in text:
            if self.broken:
                break
            try:
                self._char(char)
            except Unsupported:
                self.broken = True
        return self

    def _char(self, c: str) -> None:
        if self.done:
            self.broken = True
            return
        if not self.stack:
            self._open(self._resolve(self.root), c)
            return
        top = self.stack[-1]
        if top.kind == "pending":
            self._open(self._resolve(top.nodes[0]), c)
        elif top.kind == "string" or (top.kind == "object" and top.state == "key"):
            self._in_string(top, c)
        elif top.kind == "scalar":
            if c in ",}]":
                self._close_value()
                self._char(c)
            else:
                top.text += c
        elif top.kind == "enum":
            if any(choice.startswith(top.text + c) for choice in top.choices):
                top.text += c
            elif top.text in top.choices:
                self._close_value()
                self._char(c)
            else:
                self.broken = True
        elif top.kind == "object":
            self._in_object(top, c)
        else:
            self._in_array(top, c)

    def _in_string(self, top: _Frame, c: str) -> None:
        if top.escape:
            top.escape = False
        elif c == "\\":
            top.escape = True
        elif c == '"':
            if top.kind == "object":  # a key ends
                top.key, top.state, top.text = top.text, "colon", ""
                top.nodes = [n for n in top.nodes if top.key in n.get("properties", {})] or self._broken()
            else:
                self._close_value()
            return
        top.text += c

    def _in_object(self, top: _Frame, c: str) -> None:
        if top.state in ("start", "after") and c == "}":
            self._close_value()
        elif top.state in ("start", "comma") and c == '"':
            top.state, top.text = "key", ""
        elif top.state == "after" and c == ",":
            top.state = "comma"
        elif top.state == "colon" and c == ":":
            top.state = "value"
            self.stack.append(_Frame("pending", [top.nodes[0]["properties"][top.key]]))
        else:
            self.broken = True

    def _in_array(self, top: _Frame, c: str) -> None:
        if top.state in ("start", "after") and c == "]":
            self._close_value()
        elif top.state == "after" and c == ",":
            top.state = "comma"
        elif top.state in ("start", "comma"):
            top.state = "value"
            self._open(self._resolve(self._items(top.nodes[0])), c)
        else:
            self.broken = True

    def _open(self, nodes: list[dict], c: str) -> None:
        """A value of one of `nodes` starts with `c`."""
        if self.stack and self.stack[-1].kind == "pending":
            self.stack.pop()
        enums = [n for n in nodes if "enum" in n or "const" in n]
        if enums:
            if len(enums) != len(nodes):
                raise Unsupported("a union of enums and other types")
            choices = tuple(_dumps(v) for n in enums for v in (n["enum"] if "enum" in n else [n["const"]]))
            self.stack.append(_Frame("enum", enums, choices=choices))
            self._char(c)
            return
        wanted = {"{": ("object",), "[": ("array",), '"': ("string",)}.get(c, ("number", "integer", "boolean", "null"))
        matching = [n for n in nodes if _type(n) in wanted]
        if not matching:
            self.broken = True
            return
        kind = {"{": "object", "[": "array", '"': "string"}.get(c, "scalar")
        frame = _Frame(kind, matching)
        if kind == "scalar":
            frame.text = c
        self.stack.append(frame)

    def _close_value(self) -> None:
        self.stack.pop()
        if not self.stack:
            self.done = True
            return
        parent = self.stack[-1]
        if parent.kind == "object":
            parent.seen, parent.state, parent.key = parent.seen + (parent.key,), "after", ""
        else:
            parent.count, parent.state = parent.count + 1, "after"

    def _broken(self) -> list:
        self.broken = True
        return []

    # -- the shortest closing ----------------------------------------------------------------
    def closing(self) -> str | None:
        """The shortest text that makes the answer so far a complete, valid document; None where it is not known."""
        if self.broken:
            return None
        out = []
        try:
            if not self.stack and not self.done:
                return self.shortest(self.root)
            frames = [replace(f) for f in self.stack]
            for depth in range(len(frames) - 1, -1, -1):
                frame = frames[depth]
                text = self._finish(frame)
                if text is None:
                    return None
                out.append(text)
                if depth:
                    parent = frames[depth - 1]
                    if parent.kind == "object":
                        parent.seen, parent.state = parent.seen + (parent.key,), "after"
                    else:
                        parent.count, parent.state = parent.count + 1, "after"
        except Unsupported:
            return None
        return "".join(out)

    def _finish(self, frame: _Frame) -> str | None:
        if frame.kind == "pending":
            return self.shortest(frame.nodes[0])
        if frame.kind == "enum":
            rest = [c[len(frame.text) :] for c in frame.choices if c.startswith(frame.text)]
            return min(rest, key=len) if rest else None
        options = [self._finish_one(frame, node) for node in frame.nodes]
        options = [o for o in options if o is not None]
        return min(options, key=len) if options else None

    def _finish_one(self, frame: _Frame, node: dict) -> str | None:
        if frame.kind == "string":
            return _finish_string(node, frame.text, frame.escape)
        if frame.kind == "scalar":
            return _finish_scalar(node, frame.text)
        if frame.kind == "array":
            need = max(0, int(node.get("minItems", 0)) - frame.count)
            item = self.shortest(self._items(node)) if need or frame.state == "comma" else ""
            if item is None:
                return None
            if frame.state == "comma":
                return ",".join([item] * max(need, 1)) + "]"
            lead = "," if frame.state == "after" else ""
            return (lead + ",".join([item] * need) if need else "") + "]"
        return self._finish_object(frame, node)

    def _finish_object(self, frame: _Frame, node: dict) -> str | None:
        props, required = node.get("properties", {}), set(node.get("required", ()))
        if required - props.keys():
            raise Unsupported("a required member the properties do not declare")
        order = list(props)
        last = max((order.index(k) for k in frame.seen if k in props), default=-1)

        def members(after: int, first: bool) -> str | None:
            parts = []
            for k in order[after + 1 :]:
                if k in required and k not in frame.seen:
                    value = self.shortest(props[k])
                    if value is None:
                        return None
                    parts.append(f"{_dumps(k)}:{value}")
            return ("" if first or not parts else ",") + ",".join(parts)

        if frame.state in ("start", "after"):
            rest = members(last, frame.state == "start")
            return None if rest is None else rest + "}"
        if frame.state == "colon":
            value, rest = self.shortest(props[frame.key]), members(order.index(frame.key), False)
            return None if value is None or rest is None else ":" + value + rest + "}"
        if frame.state == "comma":
            missing = [k for k in order[last + 1 :] if k in required and k not in frame.seen]
            candidates = [missing[0]] if missing else order[last + 1 :]
        else:  # "key": the name so far must start a property after the last one written
            candidates = [
                k
                for k in order[last + 1 :]
                if k.startswith(frame.text) and not (required - set(frame.seen) & set(order[last + 1 : order.index(k)]))
            ]
        best = None
        for k in candidates:
            value, rest = self.shortest(props[k]), members(order.index(k), False)
            if value is None or rest is None:
                continue
            name = _dumps(k) if frame.state == "comma" else _dumps(k)[1 + len(frame.text) :]
            text = f"{name}:{value}{rest}}}"
            if best is None or len(text) < len(best):
                best = text
        return best

    def shortest(self, node: dict) -> str | None:
        """The shortest JSON text valid under `node`; None where none is known."""
        key = id(node)  # the node is kept beside its text, so its id cannot be reused while cached
        if key not in self._shortest:
            self._shortest[key] = (node, None)  # a recursive schema's cycle gives no shorter text
            options = [self._shortest_one(n) for n in self._resolve(node)]
            options = [o for o in options if o is not None]
            self._shortest[key] = (node, min(options, key=len) if options else None)
        return self._shortest[key][1]

    def _shortest_one(self, node: dict) -> str | None:
        if "const" in node:
            return _dumps(node["const"])
        if "enum" in node:
            return min((_dumps(v) for v in node["enum"]), key=len) if node["enum"] else None
        kind = _type(node)
        if kind == "object":
            frame = _Frame("object", [node])
            rest = self._finish_object(frame, node)
            return None if rest is None else "{" + rest
        if kind == "array":
            need = int(node.get("minItems", 0))
            item = self.shortest(self._items(node)) if need else ""
            return None if item is None else "[" + ",".join([item] * need) + "]"
        if kind == "string":
            rest = _finish_string(node, "", False)
            return None if rest is None else '"' + rest
        if kind in ("number", "integer"):
            return _shortest_number(node)
        return {"boolean": "true", "null": "null"}.get(kind, "0")

    def _items(self, node: dict) -> dict:
        if "prefixItems" in node:
            raise Unsupported("prefixItems")
        items = node.get("items", {})
        return items if isinstance(items, dict) else {}

    def _resolve(self, node: dict) -> list[dict]:
        """`node` as the concrete schemas it may be: references followed, unions and type lists split."""
        if not isinstance(node, dict):
            return [{}]
        if "allOf" in node or "not" in node or "if" in node or "patternProperties" in node:
            raise Unsupported("allOf/not/if/patternProperties")
        if isinstance(node.get("$ref"), str):
            target = self.root
            for token in [t.replace("~1", "/").replace("~0", "~") for t in node["$ref"][1:].split("/") if t]:
                target = target[token]
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return self._resolve({**target, **rest} if rest.keys() - {"description", "title"} else target)
        for union in ("anyOf", "oneOf"):
            if union in node:
                base = {k: v for k, v in node.items() if k != union}
                return [n for branch in node[union] for n in self._resolve({**base, **branch} if base else branch)]
        if isinstance(node.get("type"), list):
            return [{**node, "type": t} for t in node["type"]]
        return [node]


def _type(node: dict) -> str:
    if "type" in node:
        return node["type"]
    if "properties" in node or "required" in node:
        return "object"
    if "items" in node or "prefixItems" in node:
        return "array"
    return "any"


def _finish_string(node: dict, text: str, escape: bool) -> str | None:
    """What ends a string value begun with `text` (raw, escapes kept) validly, closing quote included."""
    tail = ""
    if escape:
        tail = "n"
    elif regex.search(r"\\u[0-9a-fA-F]{0,3}$", text):
        tail = "0" * (4 - len(text) + text.rindex("\\u") + 2)
    try:
        value = json.loads('"' + text + tail + '"')
    except json.JSONDecodeError:
        return None
    low, high = int(node.get("minLength", 0)), node.get("maxLength")
    if not text and node.get("format") in _FORMAT_EXAMPLES and "pattern" not in node:
        return _FORMAT_EXAMPLES[node["format"]] + '"'
    pattern = node.get("pattern") or _FORMATS.get(node.get("format", ""))
    if pattern is None:
        pad = max(0, low - len(value))
        return tail + "a" * pad + '"' if high is None or len(value) + pad <= high else None
    compiled = regex.compile(pattern.removeprefix("^").removesuffix("$"))
    added = ""
    for _ in range(64):
        candidate = value + added
        if compiled.fullmatch(candidate) and len(candidate) >= low:
            return tail + added + '"'
        for c in _PAD:
            if compiled.fullmatch(candidate + c, partial=True) and (high is None or len(candidate) + 1 <= high):
                added += c
                break
        else:
            return None
    return None


def _in_range(node: dict, value: float) -> bool:
    if "minimum" in node and value < node["minimum"]:
        return False
    if "maximum" in node and value > node["maximum"]:
        return False
    if "exclusiveMinimum" in node and value <= node["exclusiveMinimum"]:
        return False
    return not ("exclusiveMaximum" in node and value >= node["exclusiveMaximum"])


def _finish_scalar(node: dict, text: str) -> str | None:
    kind = _type(node)
    if kind in ("boolean", "null"):
        words = ["true", "false"] if kind == "boolean" else ["null"]
        rest = [w[len(text) :] for w in words if w.startswith(text)]
        return min(rest, key=len) if rest else None
    pattern = _INTEGER if kind == "integer" else _NUMBER
    for added in ("", "0", "1", ".0", "00", "0.0", "000"):
        candidate = text + added
        if pattern.fullmatch(candidate) and _in_range(node, float(candidate)):
            return added
    return None


def _shortest_number(node: dict) -> str | None:
    low = max(node.get("minimum", -math.inf), node.get("exclusiveMinimum", -math.inf))
    high = min(node.get("maximum", math.inf), node.get("exclusiveMaximum", math.inf))
    candidates = [0]
    if math.isfinite(low):
        candidates += [math.ceil(low), math.ceil(low) + 1]
    if math.isfinite(high):
        candidates += [math.floor(high), math.floor(high) - 1]
    return next((str(value) for value in candidates if _in_range(node, value)), None)
