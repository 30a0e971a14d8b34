"""Routes: /infer/{variant}, OpenAI-compatible /v1/*, /admin/*, health, readiness and metrics.

Each route hands the request to the serving runtime (`core.serving.runtime`) and shapes its answer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Response
from fastapi.responses import StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.errors import InvalidRequest
from core.kinds import ServedAnswer
from service.deps import CallerKey, Runtime, require_admin
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
    InferRequest,
    InferResponse,
    ModelCard,
    ModelList,
    PromoteRequest,
    PromoteResponse,
    ReloadResponse,
    TokenLogprob,
    TopLogprob,
    Usage,
)

router = APIRouter()
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 422, 503)}


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", responses=ERRORS)
def readyz(runtime: Runtime) -> dict:
    served = {f"{v.task}:{v.name}": v.ref for v in runtime.engine.served()}
    return {"status": "ready", "served": sorted(served), "refs": served}


@router.get("/metrics")
def metrics(runtime: Runtime) -> Response:
    for adapter, seconds in runtime.engine.adapter_load_s.items():
        runtime.metrics.adapter_load.labels(adapter).set(seconds)
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post("/infer/{variant}", response_model=InferResponse, responses=ERRORS)
def infer(
    variant: Literal["base", "sft", "selftrain", "kd", "dpo", "auto"], body: InferRequest, runtime: Runtime, caller: CallerKey
) -> InferResponse:
    """Answer with one variant; `auto` answers with the student and escalates to the teacher when unsure."""
    if body.verify and body.tests is None:
        raise InvalidRequest("tests", "verify needs the tests to run the answer against")
    if body.tests is not None and not body.verify:
        raise InvalidRequest("verify", "tests were sent without verify: true (set it to run them)")
    answer = runtime.infer(body.task, variant, body.input, body.json_schema, caller, body.tests)
    return InferResponse.model_validate({k: v for k, v in asdict(answer).items() if k in InferResponse.model_fields})


@router.get("/v1/models", response_model=ModelList)
def list_models(runtime: Runtime) -> ModelList:
    return ModelList(data=[ModelCard(id=name) for name in runtime.model_names()])


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=ERRORS)
def chat_completions(body: ChatRequest, runtime: Runtime, caller: CallerKey) -> ChatCompletion:
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
    answer = runtime.chat(body.model, user[-1], who, body.max_completion_tokens or body.max_tokens, stop, schema, body.tests)
    choice = Choice(
        message=AssistantMessage(content=answer.output),
        finish_reason=answer.finish_reason,
        logprobs=_label_logprobs(answer, body) if body.logprobs else None,
    )
    extra = {
        k: v
        for k, v in asdict(answer).items()
        if k in ("adapter", "gate", "label_probs", "confidence", "schema_valid", "schema_errors", "closed_early", "verdict")
    }
    completion = ChatCompletion(
        id=answer.request_id,
        created=int(time.time()),
        model=body.model,
        choices=[choice],
        usage=Usage(
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            total_tokens=answer.prompt_tokens + answer.completion_tokens,
        ),
        distill_slm={k: v for k, v in extra.items() if v is not None},
    )
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(_events(completion, usage), media_type="text/event-stream")
    return completion


def _events(completion: ChatCompletion, include_usage: bool) -> Iterator[str]:
    """The answer as OpenAI's server-sent events: the role, the content, the finish reason, (usage), [DONE]."""
    choice = completion.choices[0]
    head = {"id": completion.id, "created": completion.created, "model": completion.model}
    chunks = [
        ChatCompletionChunk(**head, choices=[ChunkChoice(delta=Delta(role="assistant", content=""))]),
        ChatCompletionChunk(**head, choices=[ChunkChoice(delta=Delta(content=choice.message.content))]),
        ChatCompletionChunk(**head, choices=[ChunkChoice(delta=Delta(), finish_reason=choice.finish_reason)]),
    ]
    if include_usage:
        chunks.append(ChatCompletionChunk(**head, choices=[], usage=completion.usage))
    for chunk in chunks:
        yield f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"
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
