"""Dependencies: the engine and audit log from app.state, the admin key check, the caller's key id."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from core.audit import AuditLog
from core.batcher import DynamicBatcher
from core.engine import InferenceEngine
from service.metrics import ServiceMetrics
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> InferenceEngine:
    engine = getattr(request.app.state, "engine", None)
    if engine is None or engine.model is None:
        raise HTTPException(503, "model not loaded yet")
    return engine


def get_batcher(request: Request, _ready: Annotated[InferenceEngine, Depends(get_engine)]) -> DynamicBatcher:
    return request.app.state.batcher


def get_audit(request: Request) -> AuditLog:
    return request.app.state.audit


def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


def _presented_key(x_api_key: str | None, authorization: str | None) -> str | None:
    if x_api_key:
        return x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def caller_key_id(
    x_api_key: Annotated[str | None, Header()] = None, authorization: Annotated[str | None, Header()] = None
) -> str:
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


Engine = Annotated[InferenceEngine, Depends(get_engine)]
Audit = Annotated[AuditLog, Depends(get_audit)]
Batcher = Annotated[DynamicBatcher, Depends(get_batcher)]
CallerKey = Annotated[str, Depends(caller_key_id)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
Metrics = Annotated[ServiceMetrics, Depends(get_metrics)]
