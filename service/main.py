"""The FastAPI app: the serving runtime on app.state, routers over it, project errors as one JSON shape.

uvicorn --factory service.main:create_app     (or: distill-slm serve)
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.common.ports import free_port
from core.errors import (
    DistillError,
    DocumentTooLong,
    EngineUnavailable,
    InputTooLong,
    InvalidRequest,
    Overloaded,
    RegistryError,
    SandboxUnavailable,
    SchemaError,
    UnknownVariant,
)
from core.serving.runtime import ServingRuntime
from core.settings import ServiceSettings
from service.deps import RateLimiter, presented_key_id
from service.routes import router

log = logging.getLogger(__name__)

# A project error a request can cause -> (status, error type, the request field it names)
ERROR_STATUS: list[tuple[type[DistillError], int, str, str | None]] = [
    (InputTooLong, 413, "too_large", None),
    (DocumentTooLong, 413, "too_large", "input"),
    (InvalidRequest, 422, "invalid_request", None),
    (SchemaError, 422, "invalid_request", "json_schema"),
    (UnknownVariant, 404, "unknown_model", "task"),
    (RegistryError, 404, "not_found", "ref"),
    (Overloaded, 503, "overloaded", None),
    (EngineUnavailable, 503, "engine_unavailable", None),
    (SandboxUnavailable, 503, "sandbox_unavailable", "tests"),
]


class BodyLimit:
    """Refuse a request body over `max_bytes` (413) whether or not it says its length: a declared length is checked
    first; a body without one (chunked) is read only up to the limit, then refused, never buffered whole."""

    def __init__(self, app: ASGIApp, max_bytes: int, on_refused: Callable[[Scope, str], None]) -> None:
        self.app, self.max_bytes, self.on_refused = app, max_bytes, on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                return await self._refuse(
                    scope, send, f"body of {length.decode(errors='replace')} bytes is over the limit of {self.max_bytes}"
                )
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:  # no declared length: read it here, up to the limit
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._refuse(scope, send, f"body over the limit of {self.max_bytes} bytes (read without a Content-Length)")
        body, sent = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, message: str) -> None:
        self.on_refused(scope, message)
        body = json.dumps({"error": {"message": message, "type": "too_large", "param": None, "code": "too_large", "field": None}})
        await send(
            {"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]}
        )
        await send({"type": "http.response.body", "body": body.encode()})


class CountRequests:
    """Count answers by route template and status, and time them. Plain ASGI (not `@app.middleware`), so `receive` reaches the routes
    unwrapped and a client's disconnect is seen while its request waits."""

    def __init__(self, app: ASGIApp, counter, seconds) -> None:
        self.app, self.counter, self.seconds = app, counter, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status, start = {"code": 500}, time.perf_counter()

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route = scope.get("route")  # the template (/infer/{variant}), so label values stay few
            labels = (getattr(route, "path", "<unmatched>"), str(status["code"]))
            self.counter.labels(*labels).inc()
            self.seconds.labels(*labels).observe(time.perf_counter() - start)


def _error(
    status: int, message: str, kind: str, field: str | None = None, request: Request | None = None, headers: dict | None = None
) -> JSONResponse:
    """OpenAI's error shape (`message`, `type`, `param`, `code`) on every route; `field` repeats `param` for older clients.
    A refused request is audited (route, status, message, field, the caller's key id), answered ones by the runtime."""
    if request is not None:
        caller = presented_key_id(request.headers.get("x-api-key"), request.headers.get("authorization"))
        request.app.state.runtime.audit_event(request.url.path, caller, status=status, error=message, field=field)
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": field, "code": kind, "field": field}}, status_code=status, headers=headers
    )


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings()
    runtime = ServingRuntime(settings)
    # Every admitted request may wait in a lane with a thread of its own: enough threads for all of them, so the
    # lanes' bounds, not the pool, decide who waits (and the pool is not the one health routes or admin use).
    pool = ThreadPoolExecutor(max_workers=3 * settings.max_queue + 4, thread_name_prefix="distill-slm-request")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.get_running_loop().run_in_executor(None, runtime.start)  # loading takes seconds: not on the loop
        if settings.require_client_key and not (settings.client_api_keys or settings.admin_api_keys):
            log.warning("require_client_key is on but no client_api_keys are set: every inference request will be refused")
        yield
        pool.shutdown(wait=False, cancel_futures=True)
        runtime.close()

    app = FastAPI(title="distill-slm", lifespan=lifespan)
    app.state.settings, app.state.runtime, app.state.inference_pool = settings, runtime, pool
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    app.include_router(router)

    def body_refused(scope: Scope, message: str) -> None:
        runtime.audit_event(scope.get("path", ""), "unknown", status=413, error=message)
        runtime.metrics.requests.labels("<body too large>", "413").inc()

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, on_refused=body_refused)

    app.add_middleware(CountRequests, counter=runtime.metrics.requests, seconds=runtime.metrics.http_seconds)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"] if p not in ("body", "path", "query"))
        return _error(422, f"{field or 'body'}: {first['msg']}", "invalid_request", field or None, request)

    @app.exception_handler(StarletteHTTPException)  # fastapi's HTTPException and starlette's own (unparsable bodies)
    async def http_error(request: Request, exc: StarletteHTTPException):
        field = "tests" if str(exc.detail).startswith("tests:") else None
        return _error(exc.status_code, str(exc.detail), "http_error", field, request, getattr(exc, "headers", None))

    @app.exception_handler(DistillError)
    async def project_error(request: Request, exc: DistillError):
        for cls, status, kind, field in ERROR_STATUS:
            if isinstance(exc, cls):
                message = f"input: {exc}" if isinstance(exc, DocumentTooLong) else str(exc)
                headers = {"Retry-After": str(math.ceil(exc.retry_after_s))} if isinstance(exc, Overloaded) else None
                return _error(status, message, kind, getattr(exc, "field", None) or field, request, headers)
        return _error(400, str(exc), "bad_request", None, request)

    return app


def serve_in_thread(
    settings: ServiceSettings, ready_timeout_s: float = 120.0, wrap: Callable[[ASGIApp], ASGIApp] | None = None
) -> tuple[uvicorn.Server, str]:
    """A real server in this process (for tests and benchmarks): uvicorn on a free loopback port in
    a daemon thread. Returns once /readyz answers 200; stop it with `server.should_exit = True`.
    `wrap` puts ASGI middleware around the app (the tests' fault injection)."""
    app = create_app(settings)
    return serve_app_in_thread(wrap(app) if wrap else app, ready_timeout_s)


def serve_app_in_thread(app: ASGIApp, ready_timeout_s: float = 30.0) -> tuple[uvicorn.Server, str]:
    """Any ASGI app with a /readyz route (a benchmark's teacher, a test's grading model) served as `serve_in_thread`
    serves the service; returns the server and its root URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    if wait_until_ready(url, ready_timeout_s, thread.is_alive):
        return server, url
    raise RuntimeError("the server did not become ready (see the log above)")


def wait_until_ready(url: str, timeout_s: float, alive: Callable[[], bool]) -> bool:
    """Poll `url`/readyz until it answers 200 (True), `timeout_s` passes or `alive()` says the server is gone (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False
