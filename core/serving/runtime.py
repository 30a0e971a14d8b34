"""The serving runtime: everything the HTTP service does, without HTTP.

`ServingRuntime` owns the engine (base model + adapters), the dynamic batcher, the audit log and
the Prometheus metrics. A request is one call — `infer(task, variant, text, ...)` or
`chat(model, text, ...)` — which resolves the variant (`auto`: the student, escalating to the
teacher when its calibrated confidence is under the task's threshold), answers it (`core.serving.answers`),
records latency and escalations, and writes one audit record. The FastAPI routes only translate
HTTP to these calls and `ServedAnswer` back to their response shapes.

    runtime = ServingRuntime(ServiceSettings(runs_dir="runs"))
    runtime.start()                                  # loads the base model and every served adapter
    answer = runtime.infer("creditmix", "auto", "Num_Bank_Accounts: 3; ...", caller="key-1a2b")
    runtime.close()
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import threading
import time
import uuid
from collections import defaultdict

from core import sandbox
from core.errors import AnswerBudgetTooSmall, InputTooLong, InvalidRequest, Overloaded, RegistryError, TeacherUnavailable, UnknownVariant
from core.kinds import KINDS
from core.kinds.extraction import task_schema
from core.registry import ALIASES, GateDecision
from core.serving import vllm
from core.serving.answers import Request, ServedAnswer, answer_request
from core.serving.audit import AuditLog
from core.serving.batcher import DynamicBatcher
from core.serving.counters import ServiceMetrics
from core.serving.engine import InferenceEngine
from core.serving.streaming import TokenStream
from core.serving.tools import request_schema
from core.settings import ServiceSettings
from core.teachers.base import TeacherAnswer

log = logging.getLogger(__name__)


class ServingRuntime:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.engine: InferenceEngine | None = None
        self.batcher: DynamicBatcher | None = None
        self.audit: AuditLog | None = None
        self._admit_lock = threading.Lock()
        self.in_flight: dict[str, int] = defaultdict(int)  # lane -> requests admitted and not yet answered
        self.generation = 0  # the registry generation the served adapters were loaded at
        self.watch_error: str | None = None  # the last reload the registry watch tried and could not do
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.engine.loaded

    def start(self) -> None:
        s = self.settings
        self.audit = AuditLog(s.audit_log, max_bytes=s.audit_max_bytes, redact=s.audit_redact)
        sandbox.probe()  # once, here: /readyz reports it and must not run it on the event loop
        if s.verify_tasks and sandbox.isolation(s) == "none":
            log.warning("verify is enabled for %s but will be refused: %s", s.verify_tasks, sandbox.probe().reason)
        if s.engine == "vllm":
            engine = vllm.start_engine(s)
        else:
            engine = InferenceEngine(str(s.runs_dir), s, schema_compile_s=s.schema_compile_s, fast_decode=s.fast_decode)
        self.generation = engine.registry.generation()  # read before loading: a move during the load is caught next poll
        engine.load()
        self.batcher = DynamicBatcher(
            engine,
            s.max_batch,
            s.max_wait_ms,
            on_batch=lambda task, variant, n: self.metrics.batch_size.labels(task, variant).observe(n),
            chunk_tokens=s.prefill_chunk_tokens,
            extract_batch=s.extract_max_batch,
            extract_wait_ms=s.extract_wait_ms,
            max_queue=s.max_queue,
        )
        self.engine = engine
        if s.registry_poll_s > 0:
            self._watch = threading.Thread(target=self._follow_registry, name="registry-watch", daemon=True)
            self._watch.start()

    def _follow_registry(self) -> None:
        """Reload whenever the registry's generation moves (a promotion or rollback by any process): replicas over one
        registry follow it on their own. A reload that fails leaves the served versions as they were, says why in
        /readyz, and is tried again at the next move."""
        while not self._stop.wait(self.settings.registry_poll_s):
            generation = self.generation
            try:
                generation = self.engine.registry.generation()
                if generation == self.generation:
                    continue
                served = self._reload()
            except Exception as exc:  # noqa: BLE001 (a bad version must not end the watch)
                log.exception("registry watch: reload failed")
                self.watch_error = f"generation {generation}: {type(exc).__name__}: {exc}"
                self.generation = max(self.generation, generation)  # tried: the next move tries again
                self.audit_event("registry.reload", "registry-watch", generation=generation, error=self.watch_error)
                continue
            self.watch_error = None
            self.audit_event("registry.reload", "registry-watch", generation=self.generation, served=served)

    def close(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.join(timeout=30)
        if self.batcher is not None:
            self.batcher.close()
        if self.engine is not None:
            self.engine.close()
        if self.audit is not None:
            self.audit.close()

    # -- requests --------------------------------------------------------------------------
    def lane(self, task: str) -> str:
        """The queue a task's requests wait in: its kind's (classification, idp, codegen)."""
        cfg = self.engine.configs.get(task) if self.engine else None
        return cfg.type if cfg is not None else "unknown"

    @contextlib.contextmanager
    def admitted(self, task: str):
        """Hold one of the lane's `max_queue` places for a request, or refuse it at once (Overloaded: 503)."""
        lane = self.lane(task)
        with self._admit_lock:
            if self.in_flight[lane] >= self.settings.max_queue:
                self.metrics.refused.labels(lane, "queue_full").inc()
                raise Overloaded(f"the {lane} lane is full ({self.settings.max_queue} requests in flight: max_queue)")
            self.in_flight[lane] += 1
        try:
            yield
        finally:
            with self._admit_lock:
                self.in_flight[lane] -= 1

    def status(self) -> dict:
        """What /readyz says beyond readiness: the sandbox, the decode path, tasks not served and why, queue use."""
        return {
            "sandbox": sandbox.describe(self.settings),
            "decode_path": self.engine.decode_path if self.engine else None,
            "fast_decode_setting": self.settings.fast_decode,
            "skipped_tasks": dict(self.engine.skipped) if self.engine else {},
            "in_flight": dict(self.in_flight),
            "max_queue": self.settings.max_queue,
            "registry_generation": self.generation,
            "registry_watch_error": self.watch_error,
        }

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
        if variant == "auto" and self.engine.kinds[task].escalates:
            self._maybe_escalate(answer, text)
        return self._finish(answer, start, "infer", caller, text, tests)

    def chat(
        self,
        model: str,
        text: str,
        caller: str = "anonymous",
        max_tokens: int | None = None,
        stop: list[str] | None = None,
        json_schema: dict | None = None,
        tests: str | None = None,
        stream: TokenStream | None = None,
        request_id: str | None = None,
    ) -> ServedAnswer:
        """The OpenAI-compatible path: `model` is `<task>:<variant>` or `<task>:<alias>`. `max_tokens` cuts the answer
        after that many tokens (`finish_reason` "length"); an extraction is instead decoded within it and closed early
        where it runs short, so it still validates (a budget under the shortest valid answer is refused before decoding);
        `stop` cuts it before the first stop string ("stop"); `json_schema` (a request's `response_format`) constrains an
        extraction to that schema; `tests` (codegen) are run against the answer; `stream` (built with the same `stop`) is
        fed a generated answer's tokens as they are decoded, and ends its decode early at a stop string or when its reader
        goes; `request_id` is the id to answer under (a stream's chunks carry it before the answer exists)."""
        task, _, variant = self.resolve_model(model).partition(":")
        if not variant:
            raise UnknownVariant(f"model: {model!r}; use <task>:<variant> or <task>:<alias> (see /v1/models)")
        if variant in ALIASES and (task, variant) not in self.engine.variants:
            raise UnknownVariant(f"model: task {task!r} has no {variant!r} adapter")
        self._check_length(text, "messages")
        self._check_tests(tests)
        start = time.perf_counter()
        try:
            answer = self._answer(task, variant, text, json_schema, max_tokens, tests, stream)
        except AnswerBudgetTooSmall as exc:
            raise InvalidRequest("max_tokens", str(exc)) from None
        answer.request_id = request_id or "chatcmpl-" + uuid.uuid4().hex
        self._limit(answer, max_tokens, stop)
        return self._finish(answer, start, "chat", caller, text, tests)

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
        """Every name a client may call: `<task>:<variant>` of each served variant, and the configured other names of
        those (`model_names`)."""
        served = {f"{v.task}:{v.name}" for v in self.engine.served()}
        return sorted(served | {name for name, target in self.settings.model_names.items() if target in served})

    def resolve_model(self, model: str) -> str:
        """`<task>:<variant>` for a model name a client sent: a configured other name's target, else the name itself."""
        return self.settings.model_names.get(model, model)

    def function_schema(self, model: str, offered: list[str], forced: str | None = None) -> dict:
        """The schema a chat request offering `tools` is answered under: the task's function-call schema narrowed to the
        functions offered (`core.serving.tools`); InvalidRequest naming `tools` for a task that answers no calls."""
        task = self.resolve_model(model).partition(":")[0]
        kind = self.engine.kinds.get(task)
        if kind is None:
            raise UnknownVariant(f"model: {model!r}: no task {task!r} is served (see /v1/models)")
        if "json_schema" not in kind.accepts:
            raise InvalidRequest("tools", f"task {task!r} ({kind.type}) answers with no function calls")
        return request_schema(task_schema(kind.cfg, kind.settings).schema, offered, forced)

    # -- admin -----------------------------------------------------------------------------
    def reload(self, caller: str = "anonymous") -> dict[str, str]:
        served = self._reload()
        self.audit_event("admin.reload", caller, served=served)
        return served

    def promote(self, task: str, ref: str, alias: str, force: bool, caller: str = "anonymous") -> tuple[GateDecision, dict[str, str]]:
        """Move an alias through the task's promotion gate, then reload so the answer takes effect."""
        if task not in self.engine.registry.tasks():
            raise RegistryError(f"task {task!r} is not in the registry")
        policy = self.engine.task_config(task).promotion
        decision = self.engine.registry.promote(task, ref, policy, alias=alias, force=force)
        self.audit_event("admin.promote", caller, task=task, ref=ref, alias=alias, force=force, passed=decision.passed)
        return decision, (self._reload() if decision.passed else {})

    def _reload(self) -> dict[str, str]:
        """Serve what the registry names now; the generation read first is the one served (the watch skips it)."""
        generation = self.engine.registry.generation()
        served = self.engine.reload()
        self.generation = max(self.generation, generation)
        return served

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
        self,
        task: str,
        variant: str,
        text: str,
        json_schema: dict | None,
        max_tokens: int | None = None,
        tests: str | None = None,
        stream: TokenStream | None = None,
    ) -> ServedAnswer:
        kind = self.engine.kinds.get(task)
        if kind is None:
            self.engine.get(task, variant)  # raises UnknownVariant listing what is served
        for field, value in (("json_schema", json_schema), ("tests", tests)):
            if value is not None and field not in kind.accepts:
                takers = ", ".join(k.type for k in KINDS.values() if field in k.accepts)
                raise InvalidRequest(field, f"task {task!r} is a {kind.type} task, which takes no {field} (only {takers} tasks do)")
        request = Request(task, variant, text, json_schema=json_schema, tests=tests, max_tokens=max_tokens, stream=stream)
        return answer_request(self.engine, self.batcher, request, self.settings.max_schema_bytes)

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

    def _finish(self, answer: ServedAnswer, start: float, route: str, caller: str, text: str, tests: str | None = None) -> ServedAnswer:
        answer.latency_ms = (time.perf_counter() - start) * 1000
        self.metrics.latency.labels(answer.task, answer.variant, answer.adapter).observe(answer.latency_ms / 1000)
        record = {"at": time.time(), "route": route, "caller": caller, "input": text}
        if tests is not None:  # caller-written code ran: who sent which tests, and what confined them (in the verdict)
            record["tests_sha256"] = hashlib.sha256(tests.encode()).hexdigest()
        self.audit.write(record | dataclasses.asdict(answer))
        return answer
