"""Request and response bodies, the OpenAI ones included; every error is an ErrorResponse."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None = Field(None, description="the request field at fault")
    code: str | None = None
    field: str | None = Field(None, description="the same as param")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str = Field(..., min_length=1, description="task name in the registry")
    input: str = Field(..., min_length=1, description="the text to classify, or the document to extract from")
    json_schema: dict | None = Field(
        None, description="idp tasks: extract under this JSON Schema instead of the task's (size-limited; compiled once, then cached)"
    )
    verify: bool = Field(False, description="codegen tasks: run the answer's code against `tests` in the sandbox; the verdict comes back")
    tests: str | None = Field(None, description="codegen tasks, with verify: Python asserts calling the function (size-limited)")


class InferResponse(BaseModel):
    request_id: str
    task: str
    variant: str
    adapter: str = Field(..., description="'base', 'method/version', or (auto, escalated) the teacher")
    gate: Literal["passed", "forced"] | None = Field(
        None, description="how the served version got there: it passed its promotion gate, or was promoted by force"
    )
    output: str = Field(..., description="the label, (idp) the extracted JSON as text, or (codegen) the plan and the code block")
    output_json: dict | None = Field(None, description="idp: the extracted object")
    schema_valid: bool | None = Field(None, description="idp: the output validated against the schema after decoding")
    schema_errors: list[str] | None = None
    closed_early: bool | None = Field(
        None, description="idp: the token budget ran short, so the answer was closed with its shortest valid ending"
    )
    schema_unenforced: list[str] | None = Field(
        None, description="idp: keywords of the schema the grammar cannot enforce (validated after)"
    )
    verdict: dict | None = Field(
        None, description="codegen, verify: the sandboxed run of the answer's code against the request's tests: passed, cause, error"
    )
    label_probs: dict[str, float] | None = None
    confidence: float | None = None
    margin: float | None = None
    latency_ms: float
    tier: Literal["student", "teacher"] = Field("student", description="who answered: the adapter, or (auto) the teacher")
    escalation_error: str | None = Field(None, description="auto: the teacher failed, so the student's answer stands")


class ReloadResponse(BaseModel):
    served: dict[str, str]
    reload_s: float


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str = Field(..., min_length=1)
    ref: str = Field(..., min_length=1, description="METHOD or METHOD/VERSION")
    alias: Literal["production", "staging"] = "production"
    force: bool = False


class PromoteResponse(BaseModel):
    passed: bool
    candidate: str
    incumbent: str | None
    reasons: list[str]
    metric: str = Field("", description="the primary metric the gate compared")
    candidate_value: float | None = None
    incumbent_value: float | None = Field(None, description="the incumbent's figure on the candidate's evaluation rows")
    eval_sha256: str | None = Field(None, description="fingerprint of those rows")
    served: dict[str, str]


# -- OpenAI-compatible shapes (the subset the service speaks) ----------------------------------
class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class FunctionSpec(BaseModel):
    name: str = Field(..., min_length=1)
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"] = "function"
    function: FunctionSpec


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"] = "function"
    function: NamedFunction


class FunctionCall(BaseModel):
    name: str
    arguments: str = Field(..., description="the arguments as a JSON object, in text (as OpenAI sends them)")


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ToolCallDelta(ToolCall):
    index: int = 0


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = Field(False, description="a last chunk (no choices) carrying the request's token usage")


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict | None = Field(None, description="json_schema: {name, schema, strict?}; the answer is constrained to `schema`")


class ChatRequest(BaseModel):
    """The chat-completions fields the service honours; any other field is refused (422 naming it), never ignored."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(..., description="<task>:<variant> or <task>:<alias>")
    messages: list[ChatMessage] = Field(..., min_length=1)
    temperature: float | None = Field(
        None, ge=0, le=0, description="only 0 (or absent): answers are scored (classification) or greedy-decoded, never sampled"
    )
    n: int | None = Field(None, ge=1, le=1, description="only 1: one answer per request")
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="cut the answer after this many tokens (finish_reason 'length'); an extraction is decoded within it "
        "and closed early so that it still validates",
    )
    max_completion_tokens: int | None = Field(None, ge=1, description="the same as max_tokens (OpenAI's newer name)")
    stop: str | Annotated[list[str], Field(max_length=4)] | None = Field(
        None, description="cut the answer before the first of these strings (up to 4, as OpenAI takes); a stream stops decoding there"
    )
    stream: bool = Field(False, description="answer as server-sent events (chat.completion.chunk), ending with [DONE]")
    stream_options: StreamOptions | None = None
    logprobs: bool = Field(False, description="return the answer's log-probability; alternatives are the task's labels")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="how many label alternatives to return with logprobs")
    user: str | None = Field(None, description="the end user, recorded in the audit log beside the caller's key")
    response_format: ResponseFormat | None = Field(
        None, description="idp tasks: json_schema constrains the answer to the request's schema (json_object: the task's own)"
    )
    tests: str | None = Field(
        None, description="codegen tasks: Python asserts the answer's code is run against in the sandbox (verdict in distill_slm.verdict)"
    )
    tools: list[Tool] | None = Field(
        None,
        description="a task imported from a function-calling file: the functions the answer may call; the answer comes "
        "as tool_calls (one call), naming one of these",
    )
    tool_choice: Literal["auto", "required"] | NamedToolChoice | None = Field(
        None, description="'auto' and 'required' alike (the task always calls one), or the one function to call"
    )


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "tool_calls"] = "stop"
    logprobs: ChoiceLogprobs | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: "Usage | None" = None
    distill_slm: dict | None = Field(None, description="on the chunk with the finish reason: the answer's adapter, gate, schema checks")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    distill_slm: dict = Field(
        default_factory=dict, description="what the OpenAI shape has no field for: adapter, label_probs, schema checks"
    )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(0, description="OpenAI's Model has it (a Unix time); a served name has no creation time of its own")
    owned_by: str = "distill-slm"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
