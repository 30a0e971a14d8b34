"""Dependencies: the serving runtime from app.state, the admin key check, the client key check with its rate limit,
and who may send code (tests) to run.

Keys arrive as `X-API-Key: K` or `Authorization: Bearer K` (what the openai client sends). Inference routes are open
on loopback by default (any key, or none, is accepted and its id logged); with `require_client_key` (set by
`distill-slm serve --host` for any other interface) they need one of `client_api_keys` (or an admin key). Sending
`tests` needs a key in `verify_api_keys` and a task in `verify_tasks`, always.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from core.serving.runtime import ServingRuntime
from core.settings import ServiceSettings


async def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def get_runtime(request: Request) -> ServingRuntime:
    runtime: ServingRuntime = request.app.state.runtime
    if not runtime.ready:
        raise HTTPException(503, "model not loaded yet")
    return runtime


def _presented_key(x_api_key: str | None, authorization: str | None) -> str | None:
    if x_api_key:
        return x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def key_id(key: str | None) -> str:
    """A stable, non-secret id of a key for the audit log."""
    return "anonymous" if not key else "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def presented_key_id(x_api_key: str | None, authorization: str | None) -> str:
    return key_id(_presented_key(x_api_key, authorization))


async def caller_key_id(x_api_key: Annotated[str | None, Header()] = None, authorization: Annotated[str | None, Header()] = None) -> str:
    """Dependencies run on the event loop (async): a burst never waits for a thread to check a key."""
    return presented_key_id(x_api_key, authorization)


class RateLimiter:
    """A token bucket per caller (`rate_limit_per_s`, `rate_limit_burst`); at most `callers` buckets are kept (the
    least recently seen goes first), so a flood of new callers costs bounded memory."""

    def __init__(self, rate: float, burst: int, callers: int = 10_000) -> None:
        self.rate, self.burst, self.callers = rate, burst, callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, caller: str) -> float:
        """0 when `caller` may go on now (a token taken), else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(caller, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[caller] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self._buckets) > self.callers:
                self._buckets.popitem(last=False)
        return wait


async def client_key(
    request: Request,
    settings: Annotated[ServiceSettings, Depends(get_settings)],
    x_api_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> str:
    """The caller's key id after the key check and its rate limit (401/403, 429 with Retry-After)."""
    key = _presented_key(x_api_key, authorization)
    known = {*settings.client_api_keys, *settings.admin_api_keys, *settings.verify_api_keys}
    if settings.require_client_key:
        if key is None:
            raise HTTPException(401, "this service needs a client key (X-API-Key or Authorization: Bearer)")
        if key not in known:
            raise HTTPException(403, "API key not accepted")
    caller = key_id(key)
    who = caller if key else f"ip-{request.client.host if request.client else 'unknown'}"
    wait = request.app.state.rate_limiter.retry_after(who)
    if wait > 0:
        request.app.state.runtime.metrics.refused.labels("any", "rate_limited").inc()
        raise HTTPException(
            429, f"over the rate of {settings.rate_limit_per_s:g} requests/s per caller", headers={"Retry-After": str(math.ceil(wait))}
        )
    return caller


def may_verify(settings: ServiceSettings, task: str, x_api_key: str | None, authorization: str | None) -> None:
    """Tests are code: refused (403) unless the operator enabled them for this task and the key may send them."""
    if task not in settings.verify_tasks:
        raise HTTPException(403, f"tests: running caller-sent tests is off for task {task!r} (the operator's verify_tasks setting)")
    if _presented_key(x_api_key, authorization) not in settings.verify_api_keys:
        raise HTTPException(403, "tests: this key may not send tests to run (the operator's verify_api_keys setting)")


async def require_admin(
    settings: Annotated[ServiceSettings, Depends(get_settings)],
    x_api_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    key = _presented_key(x_api_key, authorization)
    if key is None:
        raise HTTPException(401, "admin routes need an API key (X-API-Key header)")
    if key not in settings.admin_api_keys:
        raise HTTPException(403, "API key not accepted")


Runtime = Annotated[ServingRuntime, Depends(get_runtime)]
CallerKey = Annotated[str, Depends(caller_key_id)]
ClientKey = Annotated[str, Depends(client_key)]
