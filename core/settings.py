"""Everything read from the environment, in one place, in two objects.

Variables are `DISTILL_SLM_<FIELD>` (e.g. `DISTILL_SLM_RUNS_DIR`, `DISTILL_SLM_ADMIN_API_KEYS='["k"]'`),
except `HF_HUB_OFFLINE`, which keeps the name the Hugging Face libraries read.

* `ModelSettings`: what the model layer needs from the operator (where models live, hub access, schema limits,
  the sandbox, the hosts and key variables a task file may name). These are the operator's, never a task file's.
* `ServiceSettings`: those plus the service's own (keys, limits, queues, the audit log).

Nothing under `core/` reads the environment for them: each entry point (the CLI, a flow's Prefect task on whichever
worker runs it, the service, a benchmark) builds one (`ModelSettings()`, `ServiceSettings()`: read from its own
environment, so each machine of a cluster keeps its own `models_dir`) and hands it down: `for_config(cfg, settings)`
binds it to the task kind, `load_model(cfg.model, settings)`, `run_tests(code, tests, settings)`. A test builds the
settings it means (`ModelSettings(models_dir=tmp)`) instead of changing the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


def _default_models_dir() -> Path:
    """`models/` beside the code in a checkout (where `make models` puts the embedded model); else, for an installed
    package, the user's data folder (`$XDG_DATA_HOME/distill-slm/models`, ~/.local/share/...), never site-packages."""
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / "models"
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "distill-slm" / "models"


class ModelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILL_SLM_")

    # Models
    models_dir: Path = Field(
        default_factory=_default_models_dir,
        description="where converted base models live (the embedded one is fetched here): models/ in a checkout, "
        "else the user's data folder",
    )
    hf_hub_offline: bool = Field(
        True,
        validation_alias=AliasChoices("HF_HUB_OFFLINE", "DISTILL_SLM_HF_HUB_OFFLINE"),
        description="never reach a model hub (set HF_HUB_OFFLINE=0 to allow hub ids where a hub is reachable)",
    )
    max_schema_bytes: int = Field(64 * 1024, description="largest JSON Schema accepted, from a task file or a request (idp)")
    schema_compile_s: float = Field(
        5.0,
        gt=0,
        description="longest a request's own JSON Schema may take to compile into a grammar (off the request path); "
        "past it the request gets a 422 naming json_schema and the compile finishes in the background for a retry",
    )
    # Sandbox (model- and caller-written code)
    sandbox_allow_weaker: bool = Field(
        False,
        description="run code where full isolation (bubblewrap + seccomp) is not available, as a plain subprocess with "
        "resource limits only; off: such code is refused (verify answers 503, training stops) and the reason is given",
    )
    sandbox_max_concurrent: int = Field(4, ge=1, description="most sandboxed code runs at a time in one process")
    # Secrets and hosts a task file (or the retrain form) may name: operator settings, never the form's
    secret_env_allowed: list[str] = Field(
        default_factory=lambda: ["OPENAI_API_KEY", "DISTILL_SLM_TEACHER_API_KEY", "DISTILL_SLM_ADMIN_KEY"],
        description="environment variables a task's teacher.api_key_env or service.admin_key_env may name; any other "
        "is refused before anything is sent",
    )
    hosts_allowed: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "::1"],
        description="hosts a task's teacher.base_url and service.url may point at (exact names; '*.example.com' "
        "matches its subdomains); any other is refused before anything is sent. Add your teacher's API host here",
    )


class ServiceSettings(ModelSettings):
    runs_dir: Path = Field(Path("runs"), description="adapter registry to serve from")
    admin_api_keys: list[str] = Field(default_factory=list, description="keys accepted on /admin routes (X-API-Key)")
    audit_log: Path = Field(Path("runs/.audit/audit.jsonl"), description="append-only request log")
    audit_max_bytes: int = Field(50_000_000, description="rotate the audit log past this size")
    audit_redact: Literal["none", "hash", "drop"] = Field(
        "none",
        description="keep inputs out of the audit log: 'hash' stores their SHA-256, 'drop' nothing (their length stays); "
        "drift evaluation then runs without its input signals and says so",
    )
    max_tests_bytes: int = Field(16 * 1024, description="largest `tests` a codegen request may send to be run against its answer")
    max_input_chars: int = Field(8_000, description="longest input accepted, in characters (checked first: it costs nothing)")
    max_input_tokens: int = Field(
        1_024,
        ge=16,
        description="longest input accepted, in the served model's tokens: prefill time grows with it, and one request "
        "holds the model while it runs (a 7,999-character input took 12 s on 2 CPU cores)",
    )
    engine: Literal["builtin", "vllm"] = Field(
        "builtin",
        description="what runs the model: 'builtin' (this process, the default on one CPU box) or 'vllm' (a vLLM "
        "server this service starts or is pointed at: core/serving/vllm.py, docs/serving.md)",
    )
    vllm_url: str | None = Field(
        None, description="engine vllm: a running vLLM OpenAI server started with --enable-lora and runtime LoRA updating; None = start one"
    )
    vllm_executable: Path = Field(Path("vllm"), description="engine vllm: the `vllm` command started when vllm_url is None")
    vllm_max_lora_rank: int = Field(64, ge=1, description="engine vllm: --max-lora-rank of a server started here")
    vllm_start_s: float = Field(300.0, gt=0, description="engine vllm: how long a server started here may take to answer")
    fast_decode: Literal["auto", "off", "fp16", "bf16", "fp16+bf16"] = Field(
        "auto",
        description="which 16-bit copies of the linear weights generated answers (extraction, codegen) decode on: "
        "'fp16' for one-row steps, 'bf16' for batched steps, both, or 'off' (fp32 everywhere). 'auto' takes the "
        "advice of a start-up speed check (a copy is made where this CPU multiplies it >= 1.3x faster than fp32), so it "
        "can differ between machines; set it to pin the path. /readyz and /metrics say which is in force. Each copy "
        "costs half the model's fp32 size in memory, once for every adapter (distill-slm bench generate)",
    )
    prefill_chunk_tokens: int = Field(
        256,
        ge=16,
        description="a classification input longer than this many tokens is scored in steps of this size with other "
        "requests answered between the steps (chunked prefill), so one long input does not hold the model for the rest",
    )
    client_api_keys: list[str] = Field(
        default_factory=list,
        description="keys accepted on the inference routes (X-API-Key or Authorization: Bearer); admin keys are accepted too",
    )
    require_client_key: bool | None = Field(
        None,
        description="inference routes need a client key: None = only when the service binds an interface other than "
        "loopback (distill-slm serve sets it from --host); True/False to say so outright",
    )
    verify_api_keys: list[str] = Field(
        default_factory=list, description="client keys allowed to send `tests` (code run in the sandbox): none by default"
    )
    model_names: dict[str, str] = Field(
        default_factory=dict,
        description="other names clients call a served model by -> `<task>:<variant or alias>`, e.g. a fine-tuned OpenAI "
        "model's `ft:gpt-4o-mini-2024-07-18:org::abc123` -> `tickets:production`: the same client, only its base URL changed",
    )
    verify_tasks: list[str] = Field(
        default_factory=list,
        description="codegen tasks whose answers callers may run against their own tests (verify); off for every task by default",
    )
    rate_limit_per_s: float = Field(
        20.0, gt=0, description="requests per second one caller (key, or address when anonymous) may send; past it, 429"
    )
    rate_limit_burst: int = Field(40, ge=1, description="requests one caller may send at once before the rate applies")
    max_queue: int = Field(
        64, ge=1, description="requests waiting in each lane (classification, extraction, codegen); past it, 503 at once"
    )
    request_timeout_s: float = Field(
        60.0, gt=0, description="deadline of an inference request: past it, queued work is dropped and the answer is 503"
    )
    registry_poll_s: float = Field(
        2.0,
        ge=0,
        description="how often the service checks the registry's generation; when an alias has moved it reloads on its own, "
        "so every replica over one registry follows a promotion (0: only /admin/reload)",
    )
    max_body_bytes: int = Field(1_000_000, description="largest request body accepted")
    max_batch: int = Field(16, ge=1, description="most requests scored in one forward")
    max_wait_ms: float = Field(5.0, ge=0, description="how long the first request of a batch waits for company")
    # 16: a decode step of 16 rows costs 1.3x one of 8 on bf16 copies (embedded model, 2 cores: 81 vs 60 ms), so a
    # running batch of 16 answers 146 completion tokens/s against 106 for 8 (`distill-slm bench serving`).
    extract_max_batch: int = Field(
        16,
        ge=1,
        description="most extraction rows decoding together: the running batch (continuous batching), or a static batch "
        "of the same task, variant, schema and token budget",
    )
    extract_wait_ms: float = Field(
        20.0, ge=0, description="how long the first extraction request of a batch waits for company (a decode takes seconds)"
    )
