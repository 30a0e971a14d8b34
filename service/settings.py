"""Service settings, from the environment (DISTILL_SLM_*) or the CLI."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILL_SLM_")

    runs_dir: Path = Field(Path("runs"), description="adapter registry to serve from")
    admin_api_keys: list[str] = Field(default_factory=list, description="keys accepted on /admin routes (X-API-Key)")
    audit_log: Path = Field(Path("runs/.audit/audit.jsonl"), description="append-only request log")
    audit_max_bytes: int = Field(50_000_000, description="rotate the audit log past this size")
    max_input_chars: int = Field(8_000, description="longest input accepted")
    max_schema_bytes: int = Field(32_000, description="largest JSON Schema a request may carry (idp)")
    max_body_bytes: int = Field(1_000_000, description="largest request body accepted")
    max_batch: int = Field(16, ge=1, description="most requests scored in one forward")
    max_wait_ms: float = Field(5.0, ge=0, description="how long the first request of a batch waits for company")
