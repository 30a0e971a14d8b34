"""Function calls: a request's offered tools narrow the task's function-call schema; anything else is refused naming
the field; an answer reads back as a call."""

import pytest

from core.errors import InvalidRequest
from core.serving.tools import is_function_call, read_call, request_schema

CALLS = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "enum": ["lights", "set_thermostat"]},
        "arguments": {"type": "object", "properties": {"room": {"type": "string"}}, "required": []},
    },
    "required": ["name", "arguments"],
}


def test_the_offered_functions_narrow_what_a_student_may_call():
    assert request_schema(CALLS, ["lights", "weather"])["properties"]["name"] == {"type": "string", "enum": ["lights"]}
    assert request_schema(CALLS, ["lights", "set_thermostat"], forced="set_thermostat")["properties"]["name"]["enum"] == ["set_thermostat"]
    assert CALLS["properties"]["name"]["enum"] == ["lights", "set_thermostat"]  # the task's own schema is left as it was


@pytest.mark.parametrize(
    "schema, offered, forced, field",
    [
        ({"type": "object", "properties": {"vendor": {"type": "string"}}}, ["lights"], None, "tools"),  # no calls here
        (CALLS, ["weather"], None, "tools"),  # none the task was trained to call
        (CALLS, ["lights"], "set_thermostat", "tool_choice"),  # forced to one not offered
    ],
)
def test_requests_the_task_cannot_answer_are_refused_naming_the_field(schema, offered, forced, field):
    with pytest.raises(InvalidRequest) as refused:
        request_schema(schema, offered, forced)
    assert refused.value.field == field


def test_an_answer_reads_back_as_a_call():
    assert is_function_call(CALLS) and not is_function_call({"type": "object", "properties": {"name": {"type": "string"}}})
    assert read_call('{"name":"lights","arguments":{"room":"hall"}}') == ("lights", '{"room": "hall"}')
