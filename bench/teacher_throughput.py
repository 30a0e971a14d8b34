"""Trace generation keeps a remote teacher busy: `openai` backend, concurrency 8 vs one at a time.

The server is a loopback OpenAI-compatible endpoint that answers like a hosted LLM that can serve
in parallel: each request takes a fixed time (default 200 ms) no matter how many are in flight. On
a 2-core machine a real model server cannot serve 8 requests in parallel, so this measures the
client, which is what the target is about. Target: throughput at concurrency 8 >= 5x concurrency 1.

    distill-slm bench teacher-throughput [--quick] [--json]
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from fastapi import FastAPI

from core.common.config import TaskConfig
from core.common.rows import Example
from core.kinds import make_teacher
from core.settings import ModelSettings
from core.teachers.traces import TraceStore, generate_traces
from service.main import serve_app_in_thread


def llm_like_server(latency_s: float) -> FastAPI:
    app = FastAPI()

    @app.get("/readyz")
    async def ready() -> dict:
        return {"ok": True}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "remote-teacher", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: dict) -> dict:
        await asyncio.sleep(latency_s)
        alternatives = [{"token": "Good", "logprob": -0.2}, {"token": "Standard", "logprob": -2.0}, {"token": "Bad", "logprob": -3.0}]
        return {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Good"},
                    "finish_reason": "stop",
                    "logprobs": {"content": [{"token": "Good", "logprob": -0.2, "top_logprobs": alternatives}]},
                }
            ],
            "usage": {"prompt_tokens": 90, "completion_tokens": 2},
        }

    return app


def run(quick: bool = False, latency_s: float = 0.2) -> dict:
    n = 16 if quick else 64
    server, root = serve_app_in_thread(llm_like_server(latency_s))
    url = root + "/v1"
    rows = [Example(f"r{i}", f"Interest_Rate: {i}; Num_of_Loan: {i % 9}") for i in range(n)]
    figures: dict = {"requests": n, "server_latency_s": latency_s}
    try:
        for concurrency in (1, 8):
            cfg = TaskConfig()
            cfg.teacher = cfg.teacher.model_copy(
                update={
                    "backend": "openai",
                    "base_url": url,
                    "model": "remote-teacher",
                    "api_key_env": "",
                    "concurrency": concurrency,
                }
            )
            with tempfile.TemporaryDirectory() as tmp:
                store = TraceStore(Path(tmp) / "traces.jsonl")
                summary = generate_traces(rows, store, lambda cfg=cfg: make_teacher(cfg, ModelSettings()), progress=False)
                store.close()
            figures[f"concurrency_{concurrency}"] = {k: summary[k] for k in ("traces", "failed", "elapsed_s", "traces_per_s")}
    finally:
        server.should_exit = True
    ratio = figures["concurrency_8"]["traces_per_s"] / figures["concurrency_1"]["traces_per_s"]
    figures["throughput_ratio_8_vs_1"] = round(ratio, 2)
    figures["target_ratio_ge_5"] = ratio >= 5
    return figures
