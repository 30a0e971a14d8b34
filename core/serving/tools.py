"""Function calls over the OpenAI API. A task imported from a function-calling fine-tuning file answers
`{"name": <function>, "arguments": {...}}` (`distill-slm import openai`); a chat request that offers `tools` gets that
answer in OpenAI's shape, as `tool_calls`, so a client that fine-tuned a model for tool use calls the student unchanged.

    schema = request_schema(task_schema, offered=["lights"], forced=None)  # the answer may name only these functions
    name, arguments = read_call(answer.output)                             # arguments: a JSON object as text
"""

from __future__ import annotations

import json

from core.errors import InvalidRequest


def is_function_call(schema: dict) -> bool:
    """The schema of a function-calling task: an object of `name` (one of the functions it was trained on) and
    `arguments`, as the importer drafts it."""
    properties = schema.get("properties") or {}
    return set(properties) == {"name", "arguments"} and isinstance((properties["name"] or {}).get("enum"), list)


def request_schema(schema: dict, offered: list[str], forced: str | None = None) -> dict:
    """The task's schema with `name` narrowed to the functions the request offers (and to `forced`, a `tool_choice`
    naming one): a student never calls a function the client did not offer. InvalidRequest naming the field where the
    task does not answer with function calls, or calls none of those offered."""
    if not is_function_call(schema):
        raise InvalidRequest("tools", "this task's answers are not function calls (its schema is not {name, arguments})")
    known = schema["properties"]["name"]["enum"]
    names = [name for name in known if name in offered and (forced is None or name == forced)]
    if not names and forced is not None:
        raise InvalidRequest("tool_choice", f"{forced!r} is not an offered function this task calls ({', '.join(known)})")
    if not names:
        raise InvalidRequest("tools", f"none of the offered functions ({', '.join(offered)}) is one this task calls ({', '.join(known)})")
    return {**schema, "properties": {**schema["properties"], "name": {"type": "string", "enum": names}}}


def read_call(output: str) -> tuple[str, str]:
    """(function name, arguments as JSON text) of a function-calling answer."""
    value = json.loads(output)
    return value["name"], json.dumps(value.get("arguments") or {}, ensure_ascii=False)
