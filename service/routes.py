"""Routes: /infer/{variant}, OpenAI-compatible /v1/*, /admin/reload, health and readiness."""

from __future__ import annotations

import math
import time
import uuid
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import Audit, Batcher, CallerKey, Engine, Metrics, SettingsDep, require_admin
from core.registry import RegistryError
from core.schema import SchemaError, TaskSchema
from core.teacher import TeacherAnswer, TeacherUnavailable
from service.schemas import (
    ChatRequest,
    ErrorResponse,
    InferRequest,
    InferResponse,
    PromoteRequest,
    PromoteResponse,
    ReloadResponse,
)

router = APIRouter()
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 422, 503)}


def _check_length(text: str, settings, field: str) -> None:
    if len(text) > settings.max_input_chars:
        raise HTTPException(413, f"{field}: {len(text)} characters, over the limit of {settings.max_input_chars}")


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", responses=ERRORS)
def readyz(engine: Engine) -> dict:
    return {"status": "ready", "served": sorted(f"{v.task}:{v.name}" for v in engine.served())}


@router.get("/metrics")
def metrics(engine: Engine, metrics: Metrics) -> Response:
    for adapter, seconds in engine.adapter_load_s.items():
        metrics.adapter_load.labels(adapter).set(seconds)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post("/infer/{variant}", response_model=InferResponse, responses=ERRORS)
def infer(
    variant: Literal["base", "sft", "kd", "dpo", "auto"], body: InferRequest, engine: Engine, batcher: Batcher,
    audit: Audit, caller: CallerKey, settings: SettingsDep, metrics: Metrics,
) -> InferResponse:
    """Classify with one variant; `auto` answers with the student and escalates to the teacher when unsure."""
    _check_length(body.input, settings, "input")
    request_id = uuid.uuid4().hex
    start = time.perf_counter()
    name = engine.student(body.task) if variant == "auto" else variant
    cfg = engine.configs.get(body.task)
    if cfg is not None and cfg.type == "idp":
        return _extract(body, variant, name, engine, audit, caller, settings, metrics, request_id, start)
    if body.json_schema is not None:
        raise HTTPException(422, "json_schema: only document-extraction (idp) tasks take a schema")
    served, pred = batcher.classify(body.task, name, body.input)
    answer = InferResponse(
        request_id=request_id, task=body.task, variant=variant, adapter=served.ref, output=pred.label,
        label_probs=pred.probs, confidence=pred.confidence, margin=pred.margin, latency_ms=0.0,
    )
    if variant == "auto":
        threshold = engine.configs[body.task].escalation.threshold
        if pred.confidence < threshold:
            try:
                reply = engine.teacher(body.task).answer_one(body.input)
            except TeacherUnavailable as exc:  # the student's answer stands; the reason goes back with it
                reply = TeacherAnswer(None, error=str(exc))
            if reply.error is None:
                probs = reply.label_probs or {reply.output: 1.0}
                answer.tier, answer.output, answer.adapter = "teacher", reply.output, engine.teachers[body.task].name
                answer.label_probs, answer.confidence, answer.margin = probs, max(probs.values()), None
            else:
                answer.escalation_error = reply.error
        metrics.escalations.labels(body.task, answer.tier).inc()
    answer.latency_ms = (time.perf_counter() - start) * 1000
    metrics.latency.labels(body.task, variant, answer.adapter).observe(answer.latency_ms / 1000)
    audit.write({"at": time.time(), "route": "infer", "caller": caller, "input": body.input} | answer.model_dump())
    return answer


def _extract(body, variant, name, engine, audit, caller, settings, metrics, request_id, start) -> InferResponse:
    """idp: schema-constrained extraction (no cross-request batching: one generate per request)."""
    schema = None
    if body.json_schema is not None:
        try:
            schema = TaskSchema.from_dict(body.json_schema, "json_schema", max_bytes=settings.max_schema_bytes)
        except SchemaError as exc:
            raise HTTPException(422, f"json_schema{exc.pointer}: {exc.problem}") from None
    served, [result] = engine.extract(body.task, name, [body.input], schema)
    answer = InferResponse(
        request_id=request_id, task=body.task, variant=variant, adapter=served.ref, output=result.text,
        output_json=result.output, schema_valid=result.valid, schema_errors=result.errors,
        schema_unenforced=(schema or served.decoder.schema).unenforced, latency_ms=(time.perf_counter() - start) * 1000,
    )
    metrics.latency.labels(body.task, variant, answer.adapter).observe(answer.latency_ms / 1000)
    audit.write({"at": time.time(), "route": "infer", "caller": caller, "input": body.input} | answer.model_dump())
    return answer


@router.get("/v1/models")
def list_models(engine: Engine) -> dict:
    names = sorted({f"{v.task}:{v.name}" for v in engine.served()})
    names += sorted(f"{task}:{alias}" for task in engine.configs for alias in engine.registry.aliases(task))
    return {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "distill-slm"} for n in names]}


@router.post("/v1/chat/completions", responses=ERRORS)
def chat_completions(
    body: ChatRequest, engine: Engine, batcher: Batcher, audit: Audit, caller: CallerKey, settings: SettingsDep,
    metrics: Metrics,
) -> dict:
    task, _, variant = body.model.partition(":")
    if not variant:
        raise HTTPException(404, f"model: {body.model!r}; use <task>:<variant> or <task>:<alias> (see /v1/models)")
    if variant in ("production", "staging"):
        ref = engine.registry.aliases(task).get(variant)
        if ref is None:
            raise HTTPException(404, f"model: task {task!r} has no {variant!r} adapter")
        variant = ref.split("/")[0]
    user = [m.content for m in body.messages if m.role == "user"]
    if not user:
        raise HTTPException(422, "messages: no user message to answer")
    _check_length(user[-1], settings, "messages")
    start = time.perf_counter()
    request_id = "chatcmpl-" + uuid.uuid4().hex
    cfg = engine.configs.get(task)
    if cfg is not None and cfg.type == "idp":  # the answer is the extracted JSON, as text
        served, [result] = engine.extract(task, variant, [user[-1]])
        metrics.latency.labels(task, variant, served.ref).observe(time.perf_counter() - start)
        audit.write({"at": time.time(), "route": "chat", "caller": caller, "request_id": request_id, "task": task, "variant": variant,
                     "adapter": served.ref, "input": user[-1], "output": result.text, "latency_ms": (time.perf_counter() - start) * 1000})
        return {
            "id": request_id, "object": "chat.completion", "created": int(time.time()), "model": body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                      "total_tokens": result.prompt_tokens + result.completion_tokens},
            "distill_slm": {"adapter": served.ref, "schema_valid": result.valid, "schema_errors": result.errors},
        }
    served, pred = batcher.classify(task, variant, user[-1])
    metrics.latency.labels(task, variant, served.ref).observe(time.perf_counter() - start)
    audit.write({
        "at": time.time(), "route": "chat", "caller": caller, "request_id": request_id, "task": task, "variant": variant,
        "adapter": served.ref, "input": user[-1], "output": pred.label, "confidence": pred.confidence,
        "latency_ms": (time.perf_counter() - start) * 1000,
    })
    choice = {"index": 0, "message": {"role": "assistant", "content": pred.label}, "finish_reason": "stop"}
    if body.logprobs:
        # The service scores whole labels, so each label stands for one "token" of the answer.
        ranked = sorted(pred.probs.items(), key=lambda kv: -kv[1])[: body.top_logprobs or 0]
        choice["logprobs"] = {"content": [{
            "token": pred.label, "logprob": math.log(max(pred.confidence, 1e-12)), "bytes": None,
            "top_logprobs": [{"token": label, "logprob": math.log(max(p, 1e-12)), "bytes": None} for label, p in ranked],
        }]}
    return {
        "id": request_id, "object": "chat.completion", "created": int(time.time()), "model": body.model,
        "choices": [choice],
        "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1},
        "distill_slm": {"adapter": served.ref, "label_probs": pred.probs, "confidence": pred.confidence},
    }


@router.post("/admin/reload", response_model=ReloadResponse, responses=ERRORS, dependencies=[Depends(require_admin)])
def reload(engine: Engine) -> ReloadResponse:
    start = time.perf_counter()
    served = engine.reload()
    return ReloadResponse(served=served, reload_s=time.perf_counter() - start)


@router.post("/admin/promote", response_model=PromoteResponse, responses=ERRORS, dependencies=[Depends(require_admin)])
def promote(body: PromoteRequest, engine: Engine) -> PromoteResponse:
    """Move an alias through the task's promotion gate, then reload so the answer takes effect."""
    if body.task not in engine.registry.tasks():
        raise HTTPException(404, f"task {body.task!r} is not in the registry")
    policy = engine.task_config(body.task).promotion
    try:
        decision = engine.registry.promote(
            body.task, body.ref, policy.primary_metric, policy.min_gain, policy.guard_min, policy.guard_max,
            alias=body.alias, force=body.force,
        )
    except RegistryError as exc:
        raise HTTPException(404, str(exc)) from None
    served = engine.reload() if decision.passed else {}
    return PromoteResponse(**decision.__dict__, served=served)
