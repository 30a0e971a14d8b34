"""Routes: /infer/{variant}, OpenAI-compatible /v1/*, /admin/*, health, readiness and metrics.

Each route hands the request to the serving runtime (`core.serving.runtime`) and shapes its answer. Inference runs
on the app's own thread pool, inside a lane's bounded admission and a deadline (`_answer`); health, readiness and
metrics are answered on the event loop and never wait behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core import sandbox
from core.errors import InvalidRequest
from core.serving.answers import ServedAnswer
from core.serving.deadline import Deadline
from core.serving.runtime import ServingRuntime
from core.serving.streaming import TokenStream
from core.serving.tools import read_call
from service.deps import CallerKey, ClientKey, Runtime, may_verify, require_admin
from service.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    ErrorResponse,
    FunctionCall,
    InferRequest,
    InferResponse,
    ModelCard,
    ModelList,
    NamedToolChoice,
    PromoteRequest,
    PromoteResponse,
    ReloadResponse,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    TopLogprob,
    Usage,
)

router = APIRouter()
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 422, 429, 503)}


async def _answer(request: Request, runtime: ServingRuntime, task: str, call: Callable[[], ServedAnswer]) -> ServedAnswer:
    """Run `call` (the runtime's blocking request) off the event loop, inside the lane's admission and the request's
    deadline; a client that disconnects meanwhile cancels it (its queued work is dropped before it runs)."""
    with runtime.admitted(task):  # a full lane answers 503 here, before any thread is taken
        deadline = Deadline(runtime.settings.request_timeout_s)

        def run() -> ServedAnswer:
            with deadline:
                return call()

        future = asyncio.get_running_loop().run_in_executor(request.app.state.inference_pool, run)
        while True:
            done, _ = await asyncio.wait({future}, timeout=0.25)
            if done:
                return future.result()
            if await request.is_disconnected():
                deadline.cancel()


@router.get("/healthz")
async def healthz() -> dict:
    """Liveness: answered on the event loop, never behind inference."""
    return {"status": "ok"}


@router.get("/readyz", responses=ERRORS)
async def readyz(request: Request) -> JSONResponse:
    """Ready once the model is loaded: what is served, tasks skipped and why, the sandbox's isolation, the decode path."""
    runtime: ServingRuntime = request.app.state.runtime
    if not runtime.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    served = {f"{v.task}:{v.name}": v.ref for v in runtime.engine.served()}
    return JSONResponse({"status": "ready", "served": sorted(served), "refs": served} | runtime.status())


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    runtime: ServingRuntime = request.app.state.runtime
    if runtime.ready:
        for adapter, seconds in runtime.engine.adapter_load_s.items():
            runtime.metrics.adapter_load.labels(adapter).set(seconds)
        for lane, count in runtime.in_flight.items():
            runtime.metrics.in_flight.labels(lane).set(count)
        runtime.metrics.serving.info({"decode_path": runtime.engine.decode_path, "sandbox": sandbox.isolation(runtime.settings)})
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post("/infer/{variant}", response_model=InferResponse, responses=ERRORS)
async def infer(
    variant: Literal["base", "sft", "selftrain", "kd", "dpo", "auto"],
    body: InferRequest,
    request: Request,
    runtime: Runtime,
    caller: ClientKey,
) -> InferResponse:
    """Answer with one variant; `auto` answers with the student and escalates to the teacher when unsure."""
    if body.verify and body.tests is None:
        raise InvalidRequest("tests", "verify needs the tests to run the answer against")
    if body.tests is not None and not body.verify:
        raise InvalidRequest("verify", "tests were sent without verify: true (set it to run them)")
    if body.tests is not None:
        may_verify(runtime.settings, body.task, request.headers.get("x-api-key"), request.headers.get("authorization"))
    answer = await _answer(
        request, runtime, body.task, lambda: runtime.infer(body.task, variant, body.input, body.json_schema, caller, body.tests)
    )
    return InferResponse.model_validate({k: v for k, v in asdict(answer).items() if k in InferResponse.model_fields})


@router.get("/v1/models", response_model=ModelList)
def list_models(runtime: Runtime) -> ModelList:
    return ModelList(data=[ModelCard(id=name) for name in runtime.model_names()])


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=ERRORS)
async def chat_completions(body: ChatRequest, request: Request, runtime: Runtime, caller: ClientKey) -> ChatCompletion:
    """OpenAI's chat completions; with `stream: true` the answer's tokens are sent as they are decoded (server-sent
    events) and a client that goes away stops its decode."""
    user = [m.content for m in body.messages if m.role == "user"]
    if not user:
        raise HTTPException(422, "messages: no user message to answer")
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    who = f"{caller}/{body.user}" if body.user else caller
    schema = None
    if body.response_format is not None and body.response_format.type == "json_schema":
        schema = (body.response_format.json_schema or {}).get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format.json_schema.schema", "missing: the JSON Schema to answer under")
    if body.tools is not None:  # a task imported from a function-calling file: the answer is one of these calls
        if schema is not None:
            raise InvalidRequest("tools", "a function call is answered under the task's own schema: send tools or response_format")
        forced = body.tool_choice.function.name if isinstance(body.tool_choice, NamedToolChoice) else None
        schema = runtime.function_schema(body.model, [tool.function.name for tool in body.tools], forced)
    task = runtime.resolve_model(body.model).partition(":")[0]
    if body.tests is not None:
        may_verify(runtime.settings, task, request.headers.get("x-api-key"), request.headers.get("authorization"))
    budget = body.max_completion_tokens or body.max_tokens

    request_id = "chatcmpl-" + uuid.uuid4().hex

    def call(stream: TokenStream | None = None) -> ServedAnswer:
        return runtime.chat(body.model, user[-1], who, budget, stop, schema, body.tests, stream, request_id)

    usage = body.stream_options is not None and body.stream_options.include_usage
    if body.stream and body.tools is not None:  # a call goes out whole: its arguments are valid once the object is closed
        answer = await _answer(request, runtime, task, call)
        return StreamingResponse(_call_events(body, answer, usage), media_type="text/event-stream")
    if body.stream:
        stream = TokenStream(runtime.engine.tokenizer, stop or ())
        parts = _streamed(request, runtime, task, lambda: call(stream), stream)
        first = await anext(parts)  # a request refused before its first token gets its error status, not a stream
        return StreamingResponse(_events(body, request_id, first, parts, usage), media_type="text/event-stream")
    return _completion(body, await _answer(request, runtime, task, call))


def _completion(body: ChatRequest, answer: ServedAnswer) -> ChatCompletion:
    if body.tools is not None:
        message, finish = AssistantMessage(content=None, tool_calls=[_tool_call(answer)]), "tool_calls"
    else:
        message, finish = AssistantMessage(content=answer.output), answer.finish_reason
    choice = Choice(
        message=message,
        finish_reason=finish,
        logprobs=_label_logprobs(answer, body) if body.logprobs else None,
    )
    return ChatCompletion(
        id=answer.request_id, created=int(time.time()), model=body.model, choices=[choice], usage=_usage(answer), distill_slm=_extra(answer)
    )


def _tool_call(answer: ServedAnswer) -> ToolCall:
    name, arguments = read_call(answer.output)
    return ToolCall(id="call_" + answer.request_id.rsplit("-", 1)[-1][:24], function=FunctionCall(name=name, arguments=arguments))


async def _call_events(body: ChatRequest, answer: ServedAnswer, include_usage: bool) -> AsyncIterator[str]:
    """A function call as OpenAI streams one: the role, the call (whole), the finish reason, the usage when asked."""
    head = {"id": answer.request_id, "created": int(time.time()), "model": body.model}
    call = _tool_call(answer)
    chunks = [
        ChatCompletionChunk(**head, choices=[ChunkChoice(delta=Delta(role="assistant"))]),
        ChatCompletionChunk(**head, choices=[ChunkChoice(delta=Delta(tool_calls=[ToolCallDelta(**call.model_dump())]))]),
        ChatCompletionChunk(**head, choices=[ChunkChoice(delta=Delta(), finish_reason="tool_calls")], distill_slm=_extra(answer)),
    ]
    if include_usage:
        chunks.append(ChatCompletionChunk(**head, choices=[], usage=_usage(answer)))
    for chunk in chunks:
        yield f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"
    yield "data: [DONE]\n\n"


def _usage(answer: ServedAnswer) -> Usage:
    total = answer.prompt_tokens + answer.completion_tokens
    return Usage(prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens, total_tokens=total)


def _extra(answer: ServedAnswer) -> dict:
    """What the OpenAI shape has no field for."""
    fields = ("adapter", "gate", "label_probs", "confidence", "schema_valid", "schema_errors", "closed_early", "verdict")
    return {k: v for k, v in asdict(answer).items() if k in fields and v is not None}


async def _streamed(
    request: Request, runtime: ServingRuntime, task: str, call: Callable[[], ServedAnswer], stream: TokenStream
) -> AsyncIterator[str | ServedAnswer]:
    """`_answer` for a streamed request: the text as the decode feeds `stream`, then the whole answer. The lane's place
    and the deadline are held until the last part; a client that goes away (or a reader that stops reading) cancels the
    decode at its next step."""
    with runtime.admitted(task):
        deadline = Deadline(runtime.settings.request_timeout_s)
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is reading
                loop.call_soon_threadsafe(woken.set)

        def run() -> ServedAnswer:
            try:
                with deadline:
                    return call()
            finally:
                stream.finish()

        stream.notify = wake
        future = loop.run_in_executor(request.app.state.inference_pool, run)
        try:
            while True:
                try:
                    await asyncio.wait_for(woken.wait(), timeout=0.25)
                except TimeoutError:
                    if await request.is_disconnected():
                        deadline.cancel()
                        stream.cancel()
                woken.clear()
                text, finished = stream.take()
                if text:
                    yield text
                if finished:
                    break
            yield await future
        finally:
            if not future.done():
                deadline.cancel()
                stream.cancel()


async def _events(
    body: ChatRequest, request_id: str, first: str | ServedAnswer, rest: AsyncIterator[str | ServedAnswer], include_usage: bool
) -> AsyncIterator[str]:
    """OpenAI's server-sent events: the role, the content as it comes, the finish reason (with the service's extras),
    the usage when asked, [DONE]. A failure after the first chunk is sent as an `error` event, as OpenAI does."""
    head = {"id": request_id, "created": int(time.time()), "model": body.model}

    def event(chunk: ChatCompletionChunk) -> str:
        return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"

    yield event(ChatCompletionChunk(**head, choices=[ChunkChoice(delta=Delta(role="assistant", content=""))]))
    sent, part = "", first
    try:
        while isinstance(part, str):
            sent += part
            yield event(ChatCompletionChunk(**head, choices=[ChunkChoice(delta=Delta(content=part))]))
            part = await anext(rest)
    except Exception as exc:  # noqa: BLE001 (the status line has gone out: the error travels in the stream)
        error = {"message": str(exc), "type": type(exc).__name__}
        yield f"data: {json.dumps({'error': error})}\n\n"
        return
    answer: ServedAnswer = part
    if answer.output.startswith(sent) and len(answer.output) > len(sent):  # a scored label: the answer comes whole
        yield event(ChatCompletionChunk(**head, choices=[ChunkChoice(delta=Delta(content=answer.output[len(sent) :]))]))
    finish = ChunkChoice(delta=Delta(), finish_reason=answer.finish_reason)
    yield event(ChatCompletionChunk(**head, choices=[finish], distill_slm=_extra(answer)))
    if include_usage:
        yield event(ChatCompletionChunk(**head, choices=[], usage=_usage(answer)))
    yield "data: [DONE]\n\n"


def _label_logprobs(answer: ServedAnswer, body: ChatRequest) -> ChoiceLogprobs | None:
    """The service scores whole labels, so each label stands for one "token" of the answer."""
    if answer.label_probs is None:
        return None
    ranked = sorted(answer.label_probs.items(), key=lambda kv: -kv[1])[: body.top_logprobs or 0]
    token = TokenLogprob(
        token=answer.output,
        logprob=math.log(max(answer.confidence, 1e-12)),
        top_logprobs=[TopLogprob(token=label, logprob=math.log(max(p, 1e-12))) for label, p in ranked],
    )
    return ChoiceLogprobs(content=[token])


@router.post("/admin/reload", response_model=ReloadResponse, responses=ERRORS, dependencies=[Depends(require_admin)])
def reload(runtime: Runtime, caller: CallerKey) -> ReloadResponse:
    start = time.perf_counter()
    served = runtime.reload(caller)
    return ReloadResponse(served=served, reload_s=time.perf_counter() - start)


@router.post("/admin/promote", response_model=PromoteResponse, responses=ERRORS, dependencies=[Depends(require_admin)])
def promote(body: PromoteRequest, runtime: Runtime, caller: CallerKey) -> PromoteResponse:
    """Move an alias through the task's promotion gate, then reload so the answer takes effect."""
    decision, served = runtime.promote(body.task, body.ref, body.alias, body.force, caller)
    return PromoteResponse(**decision.__dict__, served=served)
