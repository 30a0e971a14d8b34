"""The protocol models: what the official client sends validates, what the service sends parses as the client's own
types, and a field the service would not honour is refused rather than ignored."""

import openai.types.chat as oa
import pytest
from openai.types import Model
from pydantic import ValidationError

from service.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    FunctionCall,
    ModelCard,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    TopLogprob,
    Usage,
)

CLIENT_BODY = {  # what `client.chat.completions.create(...)` sends with these arguments
    "model": "ft:gpt-4o-mini-2024-07-18:acme::abc123",
    "messages": [{"role": "system", "content": "Classify."}, {"role": "user", "content": "Delay: 12 days"}],
    "temperature": 0,
    "max_completion_tokens": 8,
    "stop": ["\n"],
    "stream": True,
    "stream_options": {"include_usage": True},
    "logprobs": True,
    "top_logprobs": 3,
    "user": "u-17",
}


def test_an_official_clients_request_validates():
    request = ChatRequest.model_validate(CLIENT_BODY)
    assert request.stream_options.include_usage and request.messages[1].content == "Delay: 12 days"
    schema = {"type": "json_schema", "json_schema": {"name": "invoice", "schema": {"type": "object"}, "strict": True}}
    assert ChatRequest.model_validate(CLIENT_BODY | {"response_format": schema}).response_format.type == "json_schema"


@pytest.mark.parametrize(
    "change, field",
    [
        ({"temperature": 0.7}, "temperature"),  # answers are never sampled
        ({"n": 2}, "n"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"messages": []}, "messages"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"tools": [{"type": "function"}]}, "tools"),  # a tool without its function
        ({"tool_choice": "none"}, "tool_choice"),  # the task always answers with a call: "none" is not honoured
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
        ({"stream_options": {"include_obfuscation": True}}, "stream_options"),
    ],
)
def test_what_the_service_would_not_honour_is_refused_naming_the_field(change, field):
    with pytest.raises(ValidationError) as refused:
        ChatRequest.model_validate(CLIENT_BODY | change)
    assert {error["loc"][0] for error in refused.value.errors()} == {field}


def test_the_services_answers_parse_as_the_clients_types():
    top = [TopLogprob(token="Good", logprob=-0.1), TopLogprob(token="Bad", logprob=-2.4)]
    completion = ChatCompletion(
        id="chatcmpl-1",
        created=1764720000,
        model="creditmix:production",
        choices=[
            Choice(
                message=AssistantMessage(content="Good"),
                logprobs=ChoiceLogprobs(content=[TokenLogprob(token="Good", logprob=-0.1, top_logprobs=top)]),
            )
        ],
        usage=Usage(prompt_tokens=40, completion_tokens=1, total_tokens=41),
        distill_slm={"adapter": "sft/v0003"},
    )
    parsed = oa.ChatCompletion.model_validate(completion.model_dump())
    assert parsed.choices[0].message.content == "Good" and parsed.choices[0].logprobs.content[0].top_logprobs[1].token == "Bad"
    assert parsed.usage.total_tokens == 41 and parsed.model_extra["distill_slm"] == {"adapter": "sft/v0003"}
    chunk = ChatCompletionChunk(
        id="chatcmpl-1", created=1764720000, model="m", choices=[ChunkChoice(delta=Delta(content="Go"), finish_reason="length")]
    )
    assert oa.ChatCompletionChunk.model_validate(chunk.model_dump()).choices[0].finish_reason == "length"
    usage_only = ChatCompletionChunk(
        id="c", created=1, model="m", choices=[], usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    )
    assert oa.ChatCompletionChunk.model_validate(usage_only.model_dump()).usage.completion_tokens == 2
    call = ToolCall(id="call_1", function=FunctionCall(name="lights", arguments='{"room": "hall"}'))
    message = AssistantMessage(content=None, tool_calls=[call])
    called = ChatCompletion(
        id="c", created=1, model="home:production", choices=[Choice(message=message, finish_reason="tool_calls")], usage=usage_only.usage
    )
    parsed = oa.ChatCompletion.model_validate(called.model_dump())
    assert parsed.choices[0].message.tool_calls[0].function.name == "lights" and parsed.choices[0].finish_reason == "tool_calls"
    streamed = ChatCompletionChunk(
        id="c", created=1, model="m", choices=[ChunkChoice(delta=Delta(tool_calls=[ToolCallDelta(**call.model_dump())]))]
    )
    assert (
        oa.ChatCompletionChunk.model_validate(streamed.model_dump()).choices[0].delta.tool_calls[0].function.arguments == '{"room": "hall"}'
    )
    card = Model.model_validate(ModelCard(id="creditmix:production").model_dump())
    assert card.owned_by == "distill-slm"
