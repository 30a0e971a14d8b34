"""Dependencies: the serving runtime from app.state, the admin key check, the caller's key id."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from core.serving.runtime import ServingRuntime
from core.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_runtime(request: Request) -> ServingRuntime:
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


def caller_key_id(x_api_key: Annotated[str | None, Header()] = None, authorization: Annotated[str | None, Header()] = None) -> str:
    """A stable, non-secret id of the caller's key for the audit log."""
    key = _presented_key(x_api_key, authorization)
    return "anonymous" if not key else "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def require_admin(
    settings: Annotated[Settings, Depends(get_settings)],
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
