"""The `openai` backend: any OpenAI-compatible chat-completions endpoint (vLLM, Ollama, llama.cpp
server, a hosted API, or this project's own service).

Asks for `logprobs`/`top_logprobs` so a task kind can turn the answer's first-token alternatives
into a label distribution; retries 429, 5xx, bodies that are not JSON, timeouts and dropped connections with
exponential backoff, honouring a usable `Retry-After`. The endpoint and the key's variable must be ones the
operator allows (`core.common.egress`). `check()` fails early, naming the setting to fix.
"""

from __future__ import annotations

import math
import os
import random
import time

import httpx

from core.common.config import TaskConfig
from core.common.egress import check_endpoint
from core.common.prompts import task_messages
from core.errors import TeacherUnavailable
from core.settings import ModelSettings
from core.teachers.base import EndpointTask, Teacher, TeacherAnswer


def endpoint_teacher(cfg: TaskConfig, settings: ModelSettings, task: EndpointTask) -> OpenAITeacher:
    """The `openai` backend asking for `task`, checked: raises TeacherUnavailable naming the setting to fix."""
    teacher = OpenAITeacher(cfg, settings, task)
    teacher.check()
    return teacher


class OpenAITeacher(Teacher):
    def __init__(self, cfg: TaskConfig, settings: ModelSettings, task: EndpointTask | None = None, retry_cap_s: float = 30.0) -> None:
        """`settings`: the operator's, whose allow-lists decide where this task's key may be sent."""
        t = cfg.teacher
        self.cfg, self.task, self.instruction = t, task, cfg.instruction
        self.name = f"openai:{t.model}"
        self.concurrency = t.concurrency
        self.retry_cap_s = retry_cap_s
        check_endpoint(t.base_url, t.api_key_env, "teacher", settings)  # before any key is read or anything is sent
        key = os.environ.get(t.api_key_env, "") if t.api_key_env else ""
        self._key_missing = bool(t.api_key_env) and not key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=t.concurrency, max_keepalive_connections=t.concurrency)
        self.client = httpx.Client(base_url=t.base_url.rstrip("/"), headers=headers, timeout=t.timeout_s, limits=limits)

    def check(self) -> None:
        t = self.cfg
        if not t.model:
            raise TeacherUnavailable("teacher.model is empty: name the model the endpoint serves")
        if self._key_missing:
            raise TeacherUnavailable(
                f"teacher.api_key_env: environment variable {t.api_key_env} is not set "
                "(set it, or set teacher.api_key_env to '' for an endpoint without keys)"
            )
        try:
            response = self.client.get("/models", timeout=min(t.timeout_s, 10.0))
        except httpx.HTTPError as exc:
            raise TeacherUnavailable(f"teacher.base_url: {t.base_url} is unreachable ({type(exc).__name__}: {exc})") from None
        if response.status_code in (401, 403):
            raise TeacherUnavailable(f"teacher.api_key_env: the key in {t.api_key_env} was refused ({response.status_code})")
        if response.status_code != 200:
            raise TeacherUnavailable(f"teacher.base_url: GET {t.base_url}/models answered {response.status_code}")
        served = [m.get("id") for m in response.json().get("data", [])]
        if t.model not in served:
            raise TeacherUnavailable(f"teacher.model: {t.model!r} is not served by {t.base_url}; it serves {served}")

    def close(self) -> None:
        self.client.close()

    def _post(self, body: dict) -> dict:
        """POST with retries; raises the last error when they run out."""
        attempt = 0
        while True:
            try:
                response = self.client.post("/chat/completions", json=body)
                if response.status_code == 429 or response.status_code >= 500:
                    raise _Retryable(f"HTTP {response.status_code}", response.headers.get("retry-after"))
                if response.status_code >= 400:
                    raise _Fatal(f"HTTP {response.status_code}: {response.text[:200]}")
                try:
                    data = response.json()
                except ValueError:  # a proxy's HTML error page, a cut-off body: the endpoint's fault, not the input's
                    raise _Retryable(f"HTTP {response.status_code} with a body that is not JSON: {response.text[:80]!r}", None) from None
                if not isinstance(data, dict):
                    raise _Retryable(f"HTTP {response.status_code} with a JSON body that is not an object", None)
                return data
            except (httpx.TransportError, _Retryable) as exc:
                if attempt >= self.cfg.max_retries:
                    raise _Fatal(f"gave up after {attempt + 1} attempts: {type(exc).__name__}: {exc}", transient=True) from None
                time.sleep(self._backoff(attempt, getattr(exc, "retry_after", None)))
                attempt += 1

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        """The server's Retry-After when it is a usable number of seconds (capped), else exponential backoff with jitter:
        a negative, infinite, NaN or non-numeric value (or an HTTP date) falls back to our own schedule."""
        try:
            seconds = float(retry_after) if retry_after else math.nan
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds) and seconds >= 0:
            return min(seconds, self.retry_cap_s)
        return min(self.retry_cap_s, 0.5 * 2**attempt) * (0.5 + random.random() / 2)

    def answer(self, texts: list[str]) -> list[TeacherAnswer]:
        return [self.answer_one(t) for t in texts]

    def chat(self, messages: list[dict], max_tokens: int = 16) -> str | None:
        """The endpoint's greedy reply to `messages` as they are (a grader's prompt, not the task's), or None when it
        could not answer after its retries."""
        try:
            data = self._post({"model": self.cfg.model, "messages": messages, "temperature": 0.0, "max_tokens": max_tokens})
            return data["choices"][0]["message"]["content"]
        except (_Fatal, KeyError, IndexError, TypeError):
            return None

    def answer_one(self, text: str) -> TeacherAnswer:
        """One answer, or (a task that wants several candidates, codegen) the task's combination of `candidates` answers:
        the first at temperature 0, the rest sampled."""
        first = self._ask(text, 0.0)
        if self.task.candidates == 1:
            return first
        return self.task.combine([first, *(self._ask(text, self.task.temperature) for _ in range(self.task.candidates - 1))])

    def _ask(self, text: str, temperature: float) -> TeacherAnswer:
        body = {"model": self.cfg.model, "messages": task_messages(self.instruction, text), "temperature": temperature, "max_tokens": 16}
        body |= self.task.request()
        if self.cfg.top_logprobs:
            body |= {"logprobs": True, "top_logprobs": self.cfg.top_logprobs}
        start = time.perf_counter()
        try:
            data = self._post(body)
        except _Fatal as exc:
            return TeacherAnswer(None, latency_s=time.perf_counter() - start, error=str(exc), transient=exc.transient)
        latency = time.perf_counter() - start
        usage = data.get("usage") or {}
        tokens = {"prompt_tokens": int(usage.get("prompt_tokens") or 0), "completion_tokens": int(usage.get("completion_tokens") or 0)}
        try:
            choice = data["choices"][0]
            content = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            return TeacherAnswer(None, latency_s=latency, error="unparsable response: no choices[0].message.content", **tokens)
        if not content.strip():
            return TeacherAnswer(None, latency_s=latency, error="empty answer", **tokens)
        top = [
            [[alt.get("token"), alt.get("logprob")] for alt in (tok.get("top_logprobs") or [])]
            for tok in ((choice.get("logprobs") or {}).get("content") or [])
        ]
        return self.task.read_reply(content, top, latency, **tokens)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: str | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Fatal(Exception):
    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient  # retries ran out on a transport fault; the input itself may be fine
