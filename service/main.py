"""The FastAPI app: the serving runtime on app.state, routers over it, project errors as one JSON shape.

uvicorn --factory service.main:create_app     (or: distill-slm serve)
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from core.errors import DistillError, DocumentTooLong, InputTooLong, InvalidRequest, RegistryError, SchemaError, UnknownVariant
from core.serving.runtime import ServingRuntime
from core.settings import Settings
from service.deps import caller_key_id
from service.routes import router

# A project error a request can cause -> (status, error type, the request field it names)
ERROR_STATUS: list[tuple[type[DistillError], int, str, str | None]] = [
    (InputTooLong, 413, "too_large", None),
    (DocumentTooLong, 413, "too_large", "input"),
    (InvalidRequest, 422, "invalid_request", None),
    (SchemaError, 422, "invalid_request", "json_schema"),
    (UnknownVariant, 404, "unknown_model", "task"),
    (RegistryError, 404, "not_found", "ref"),
]


def _error(status: int, message: str, kind: str, field: str | None = None, request: Request | None = None) -> JSONResponse:
    """OpenAI's error shape (`message`, `type`, `param`, `code`) on every route; `field` repeats `param` for older clients.
    A refused request is audited (route, status, message, field, the caller's key id), answered ones by the runtime."""
    if request is not None:
        caller = caller_key_id(request.headers.get("x-api-key"), request.headers.get("authorization"))
        request.app.state.runtime.audit_event(request.url.path, caller, status=status, error=message, field=field)
    return JSONResponse({"error": {"message": message, "type": kind, "param": field, "code": kind, "field": field}}, status_code=status)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServingRuntime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime.start()
        yield
        runtime.close()

    app = FastAPI(title="distill-slm", lifespan=lifespan)
    app.state.settings, app.state.runtime = settings, runtime
    app.include_router(router)

    @app.middleware("http")
    async def limit_body_and_count(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_body_bytes:
            response = _error(413, f"body of {length} bytes is over the limit of {settings.max_body_bytes}", "too_large", None, request)
        else:
            response = await call_next(request)
        route = request.scope.get("route")  # the template (/infer/{variant}), so label values stay few
        runtime.metrics.requests.labels(getattr(route, "path", "<unmatched>"), str(response.status_code)).inc()
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"] if p not in ("body", "path", "query"))
        return _error(422, f"{field or 'body'}: {first['msg']}", "invalid_request", field or None, request)

    @app.exception_handler(StarletteHTTPException)  # fastapi's HTTPException and starlette's own (unparsable bodies)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), "http_error", None, request)

    @app.exception_handler(DistillError)
    async def project_error(request: Request, exc: DistillError):
        for cls, status, kind, field in ERROR_STATUS:
            if isinstance(exc, cls):
                message = f"input: {exc}" if isinstance(exc, DocumentTooLong) else str(exc)
                return _error(status, message, kind, getattr(exc, "field", None) or field, request)
        return _error(400, str(exc), "bad_request", None, request)

    return app


def serve_in_thread(
    settings: Settings, ready_timeout_s: float = 120.0, wrap: Callable[[ASGIApp], ASGIApp] | None = None
) -> tuple[uvicorn.Server, str]:
    """A real server in this process (for tests and benchmarks): uvicorn on a free loopback port in
    a daemon thread. Returns once /readyz answers 200; stop it with `server.should_exit = True`.
    `wrap` puts ASGI middleware around the app (the tests' fault injection)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(wrap(app) if wrap else app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline and thread.is_alive():
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the service did not become ready (see the log above)")
