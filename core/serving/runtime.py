"""The serving runtime: everything the HTTP service does, without HTTP.

`ServingRuntime` owns the engine (base model + adapters), the dynamic batcher, the audit log and
the Prometheus metrics. A request is one call — `infer(task, variant, text, ...)` or
`chat(model, text, ...)` — which resolves the variant (`auto`: the student, escalating to the
teacher when its calibrated confidence is under the task's threshold), lets the task kind answer,
records latency and escalations, and writes one audit record. The FastAPI routes only translate
HTTP to these calls and `ServedAnswer` back to their response shapes.

    runtime = ServingRuntime(Settings(runs_dir="runs"))
    runtime.start()                                  # loads the base model and every served adapter
    answer = runtime.infer("creditmix", "auto", "Num_Bank_Accounts: 3; ...", caller="key-1a2b")
    runtime.close()
"""

from __future__ import annotations

import dataclasses
import time
import uuid

from core.errors import AnswerBudgetTooSmall, InputTooLong, InvalidRequest, RegistryError, TeacherUnavailable, UnknownVariant
from core.kinds import ServedAnswer, kind_of
from core.registry import ALIASES, GateDecision
from core.serving.audit import AuditLog
from core.serving.batcher import DynamicBatcher
from core.serving.engine import InferenceEngine
from core.serving.metrics import ServiceMetrics
from core.settings import Settings
from core.teachers.base import TeacherAnswer


class ServingRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.engine: InferenceEngine | None = None
        self.batcher: DynamicBatcher | None = None
        self.audit: AuditLog | None = None

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.engine.model is not None

    def start(self) -> None:
        s = self.settings
        self.audit = AuditLog(s.audit_log, max_bytes=s.audit_max_bytes, redact=s.audit_redact)
        engine = InferenceEngine(str(s.runs_dir), schema_compile_s=s.schema_compile_s, fast_decode=s.fast_decode)
        engine.load()
        self.batcher = DynamicBatcher(
            engine,
            s.max_batch,
            s.max_wait_ms,
            on_batch=lambda task, variant, n: self.metrics.batch_size.labels(task, variant).observe(n),
            chunk_tokens=s.prefill_chunk_tokens,
            extract_batch=s.extract_max_batch,
            extract_wait_ms=s.extract_wait_ms,
        )
        self.engine = engine

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        if self.engine is not None:
            self.engine.close()
        if self.audit is not None:
            self.audit.close()

    # -- requests --------------------------------------------------------------------------
    def infer(
        self, task: str, variant: str, text: str, json_schema: dict | None = None, caller: str = "anonymous", tests: str | None = None
    ) -> ServedAnswer:
        """Answer with one variant (`base`, a method, or `auto`); `tests` (codegen) are run against the answer."""
        self._check_length(text, "input")
        self._check_tests(tests)
        start = time.perf_counter()
        name = self.engine.student(task) if variant == "auto" else variant
        answer = self._answer(task, name, text, json_schema, tests=tests)
        answer.variant, answer.request_id = variant, uuid.uuid4().hex
        if variant == "auto" and kind_of(self.engine.configs[task]).escalates:
            self._maybe_escalate(answer, text)
        return self._finish(answer, start, "infer", caller, text)

    def chat(
        self,
        model: str,
        text: str,
        caller: str = "anonymous",
        max_tokens: int | None = None,
        stop: list[str] | None = None,
        json_schema: dict | None = None,
        tests: str | None = None,
    ) -> ServedAnswer:
        """The OpenAI-compatible path: `model` is `<task>:<variant>` or `<task>:<alias>`. `max_tokens` cuts the answer
        after that many tokens (`finish_reason` "length"); an extraction is instead decoded within it and closed early
        where it runs short, so it still validates (a budget under the shortest valid answer is refused before decoding);
        `stop` cuts it before the first stop string ("stop"); `json_schema` (a request's `response_format`) constrains an
        extraction to that schema; `tests` (codegen) are run against the answer."""
        task, _, variant = model.partition(":")
        if not variant:
            raise UnknownVariant(f"model: {model!r}; use <task>:<variant> or <task>:<alias> (see /v1/models)")
        if variant in ALIASES and (task, variant) not in self.engine.variants:
            raise UnknownVariant(f"model: task {task!r} has no {variant!r} adapter")
        self._check_length(text, "messages")
        self._check_tests(tests)
        start = time.perf_counter()
        try:
            answer = self._answer(task, variant, text, json_schema, max_tokens, tests)
        except AnswerBudgetTooSmall as exc:
            raise InvalidRequest("max_tokens", str(exc)) from None
        answer.request_id = "chatcmpl-" + uuid.uuid4().hex
        self._limit(answer, max_tokens, stop)
        return self._finish(answer, start, "chat", caller, text)

    def _limit(self, answer: ServedAnswer, max_tokens: int | None, stop: list[str] | None) -> None:
        """Apply a client's `max_tokens` and `stop` to an answer, counting tokens with the served model's tokenizer."""
        if max_tokens is not None and answer.completion_tokens > max_tokens:
            ids = self.engine.tokenizer(answer.output, add_special_tokens=False).input_ids[:max_tokens]
            answer.output, answer.completion_tokens, answer.finish_reason = self.engine.tokenizer.decode(ids), len(ids), "length"
        cuts = [answer.output.find(s) for s in stop or [] if s and s in answer.output]
        if cuts:
            answer.output = answer.output[: min(cuts)]
            answer.completion_tokens = len(self.engine.tokenizer(answer.output, add_special_tokens=False).input_ids)
            answer.finish_reason = "stop"

    def model_names(self) -> list[str]:
        return sorted(f"{v.task}:{v.name}" for v in self.engine.served())

    # -- admin -----------------------------------------------------------------------------
    def reload(self, caller: str = "anonymous") -> dict[str, str]:
        served = self.engine.reload()
        self.audit_event("admin.reload", caller, served=served)
        return served

    def promote(self, task: str, ref: str, alias: str, force: bool, caller: str = "anonymous") -> tuple[GateDecision, dict[str, str]]:
        """Move an alias through the task's promotion gate, then reload so the answer takes effect."""
        if task not in self.engine.registry.tasks():
            raise RegistryError(f"task {task!r} is not in the registry")
        policy = self.engine.task_config(task).promotion
        decision = self.engine.registry.promote(task, ref, policy, alias=alias, force=force)
        self.audit_event("admin.promote", caller, task=task, ref=ref, alias=alias, force=force, passed=decision.passed)
        return decision, (self.engine.reload() if decision.passed else {})

    def audit_event(self, route: str, caller: str, **fields) -> None:
        """An audit record of something other than an answer: an admin action, a refused request (`status`, `error`)."""
        if self.audit is not None:
            self.audit.write({"at": time.time(), "route": route, "caller": caller} | fields)

    # -- pieces ----------------------------------------------------------------------------
    def _check_length(self, text: str, field: str) -> None:
        if len(text) > self.settings.max_input_chars:
            raise InputTooLong(field, f"{len(text)} characters, over the limit of {self.settings.max_input_chars}")
        tokens = len(self.engine.tokenizer(text, add_special_tokens=False).input_ids)
        if tokens > self.settings.max_input_tokens:
            raise InputTooLong(field, f"{tokens} tokens, over the limit of {self.settings.max_input_tokens} (max_input_tokens)")

    def _check_tests(self, tests: str | None) -> None:
        if tests is not None and len(tests.encode()) > self.settings.max_tests_bytes:
            raise InvalidRequest(
                "tests", f"{len(tests.encode())} bytes, over the limit of {self.settings.max_tests_bytes} (max_tests_bytes)"
            )

    def _answer(
        self, task: str, variant: str, text: str, json_schema: dict | None, max_tokens: int | None = None, tests: str | None = None
    ) -> ServedAnswer:
        cfg = self.engine.configs.get(task)
        if cfg is None:
            self.engine.get(task, variant)  # raises UnknownVariant listing what is served
        kind = kind_of(cfg)
        return kind.answer(self.engine, self.batcher, task, variant, text, json_schema, self.settings.max_schema_bytes, max_tokens, tests)

    def _maybe_escalate(self, answer: ServedAnswer, text: str) -> None:
        """Ask the teacher when the student is unsure; a failing teacher leaves the student's answer, with the reason."""
        if answer.confidence is not None and answer.confidence < self.engine.configs[answer.task].escalation.threshold:
            try:
                reply = self.engine.teacher(answer.task).answer_one(text)
            except TeacherUnavailable as exc:
                reply = TeacherAnswer(None, error=str(exc))
            if reply.error is None:
                probs = reply.label_probs or {reply.output: 1.0}
                answer.student = {"adapter": answer.adapter, "output": answer.output, "confidence": answer.confidence}
                answer.tier, answer.output, answer.adapter = "teacher", reply.output, self.engine.teachers[answer.task].name
                answer.label_probs, answer.confidence, answer.margin = probs, max(probs.values()), None
            else:
                answer.escalation_error = reply.error
        self.metrics.escalations.labels(answer.task, answer.tier).inc()

    def _finish(self, answer: ServedAnswer, start: float, route: str, caller: str, text: str) -> ServedAnswer:
        answer.latency_ms = (time.perf_counter() - start) * 1000
        self.metrics.latency.labels(answer.task, answer.variant, answer.adapter).observe(answer.latency_ms / 1000)
        record = {"at": time.time(), "route": route, "caller": caller, "input": text}
        self.audit.write(record | dataclasses.asdict(answer))
        return answer
