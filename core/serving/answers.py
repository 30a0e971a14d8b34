"""Answering one request, whatever its task's type: the service's one generation path, owned here.

The runtime (`core.serving.runtime`) resolves the variant and refuses request fields the task's kind does not
`accept`; this module does the rest the same way for every type: it clamps the client's token budget to the task's
`max_new_tokens` once, checks what the request brings of its own (a JSON Schema, tests), has the batcher or the engine
decode, and builds one `ServedAnswer`. Which path runs is chosen by what the served decoder `answers`
(`core.model.decoders.Decoder`: labels | json | code), never by the decoder's class.

    answer = answer_request(engine, batcher, Request("invoices", "production", document, max_tokens=200), max_schema_bytes)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from core.common.prompts import prompt_tokens
from core.errors import InvalidRequest, SchemaError
from core.kinds.codegen import check_tests
from core.model.schema import TaskSchema
from core.sandbox import require_isolation, run_tests
from core.serving.batcher import DynamicBatcher
from core.serving.engine import InferenceEngine, Variant
from core.serving.streaming import TokenStream, feeder


@dataclass
class ServedAnswer:
    """One answer of the service, whatever the task type; the routes turn it into their response shapes."""

    task: str
    variant: str  # as requested: base | sft | kd | dpo | auto
    adapter: str  # 'base', 'method/version', or (escalated) the teacher's name
    output: str  # the label, or the extracted JSON as text
    output_json: dict | None = None
    schema_valid: bool | None = None
    schema_errors: list[str] | None = None
    schema_unenforced: list[str] | None = None
    label_probs: dict[str, float] | None = None
    confidence: float | None = None
    margin: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tier: str = "student"
    escalation_error: str | None = None
    request_id: str = ""
    latency_ms: float = 0.0
    finish_reason: str = "stop"  # "length" when a token budget cut the answer (or, idp, closed it early)
    closed_early: bool | None = None  # idp: the budget ran short and the answer was closed with its shortest valid ending
    verdict: dict | None = None  # codegen with the request's tests: the sandboxed run's {passed, cause, error, isolation}
    gate: str | None = None  # how the served version got there: 'passed' its gate or 'forced'; None for the base model
    student: dict | None = None  # auto, escalated: the student's own answer (adapter, output, confidence), for drift

    @classmethod
    def of(cls, served: Variant, variant: str, **fields) -> ServedAnswer:
        """An answer by `served` (the engine's variant that answered: its task, version and gate) to a request for
        `variant`."""
        return cls(task=served.task, variant=variant, adapter=served.ref, gate=served.gate, **fields)


@dataclass
class Request:
    """What one request asks, whichever route it came by."""

    task: str
    variant: str  # a method, `base` or an alias (`auto` is resolved before)
    text: str
    json_schema: dict | None = None  # extraction: the request's own schema (OpenAI's `response_format`)
    tests: str | None = None  # codegen: tests the answer is run against in the sandbox
    max_tokens: int | None = None  # a client's budget; at most the task's `max_new_tokens`
    stream: TokenStream | None = None  # fed the answer's tokens as they are decoded (labels are scored: nothing to feed)


def answer_request(engine: InferenceEngine, batcher: DynamicBatcher, request: Request, max_schema_bytes: int) -> ServedAnswer:
    """One request answered by its served variant (UnknownVariant, listing what is served, when there is none)."""
    answers = engine.get(request.task, request.variant).decoder.answers
    task_max = engine.configs[request.task].max_new_tokens
    budget = min(request.max_tokens or task_max, task_max)  # the one place a client's budget is clamped
    return _PATHS[answers](engine, batcher, request, budget, max_schema_bytes)


def _labels(engine: InferenceEngine, batcher: DynamicBatcher, request: Request, budget: int, max_schema_bytes: int) -> ServedAnswer:
    """Calibrated label scores, batched with the requests for the same variant sent meanwhile; nothing is generated."""
    served, pred = batcher.classify(request.task, request.variant, request.text)
    tokenizer = served.decoder.tokenizer
    return ServedAnswer.of(
        served,
        request.variant,
        output=pred.label,
        label_probs=pred.probs,
        confidence=pred.confidence,
        margin=pred.margin,
        prompt_tokens=prompt_tokens(tokenizer, served.decoder.instruction, request.text),
        completion_tokens=len(tokenizer(pred.label, add_special_tokens=False).input_ids),  # scored, not generated
    )


def _json(engine: InferenceEngine, batcher: DynamicBatcher, request: Request, budget: int, max_schema_bytes: int) -> ServedAnswer:
    """Schema-constrained extraction (the task's schema or the request's own), decoded beside the requests sent meanwhile
    under the same schema and budget; an answer the budget cuts short is closed early and still validates."""
    schema = None
    if request.json_schema is not None:
        try:
            schema = TaskSchema.from_dict(request.json_schema, "json_schema", max_bytes=max_schema_bytes, budget_s=engine.schema_compile_s)
        except SchemaError as exc:
            raise InvalidRequest(f"json_schema{exc.pointer}", exc.problem) from None
    served, result = batcher.extract(request.task, request.variant, request.text, schema, budget, stream=request.stream)
    return ServedAnswer.of(
        served,
        request.variant,
        output=result.text,
        output_json=result.output,
        schema_valid=result.valid,
        schema_errors=result.errors,
        schema_unenforced=(schema or served.decoder.schema).unenforced,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        finish_reason="length" if result.closed_early else "stop",
        closed_early=result.closed_early,
    )


def _generated(engine: InferenceEngine, batcher: DynamicBatcher, request: Request, budget: int, max_schema_bytes: int) -> ServedAnswer:
    """Generated text, greedy: a plan and the code (code generation), or a free-text reply. With the request's tests (code
    only: the runtime refuses them for other kinds), the code is run against them in the sandbox and the verdict
    returned."""
    tests = request.tests
    if tests is not None:
        if problem := check_tests(tests):
            raise InvalidRequest("tests", problem)
        require_isolation(engine.settings)  # before the decode: without a sandbox the answer could not be checked
    served, answer = engine.decode(
        request.task,
        request.variant,
        lambda decoder: decoder.answer([request.text], max_new_tokens=budget, on_token=feeder([request.stream]))[0],
    )
    verdict = None
    if tests is not None:
        start = time.perf_counter()
        # A free sandbox slot within a few seconds, or 503: a burst of verifies queues neither here nor in the sandbox.
        result = run_tests(answer.code, tests, engine.settings, timeout_s=engine.configs[request.task].codegen.timeout_s, wait_s=5.0)
        verdict = {"passed": result.passed, "cause": result.cause or None, "error": result.error or None, "isolation": result.isolation}
        verdict["run_ms"] = round((time.perf_counter() - start) * 1000, 1)
    return ServedAnswer.of(
        served,
        request.variant,
        output=answer.text,
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        finish_reason="stop" if answer.stopped else "length",
        verdict=verdict,
    )


_PATHS: dict[str, Callable[[InferenceEngine, DynamicBatcher, Request, int, int], ServedAnswer]] = {
    "labels": _labels,
    "json": _json,
    "code": _generated,
    "text": _generated,
}
