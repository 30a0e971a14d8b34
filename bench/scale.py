"""Teacher fan-out on Ray against an endpoint of fixed latency: the rate against the ideal, inputs asked twice, inputs
lost when a worker is killed mid-run.

The endpoint (its own process) answers every request after `latency_s`, however many are in flight, and counts the
requests per input; the pool is answered by `workers` Ray actors (a local Ray instance, `scale.runner: ray`), each
with the openai backend at `concurrency` requests in flight. The ideal rate is workers x concurrency / latency. The
second run kills one worker process (SIGKILL) once a third of the answers are written: Ray restarts the actor and
resends its shards; every input must still be answered once in the cache.

    distill-slm bench scale [--quick] [--json]      # targets: >= 0.8 of the ideal, 0 asked twice, 0 lost
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import uvicorn
from fastapi import FastAPI, Request

from core.common.config import ScaleConfig, TaskConfig
from core.common.rows import Example
from core.kinds import for_config, make_teacher
from core.teachers.fanout import RayFanout
from core.teachers.traces import TraceStore, generate_traces


def _endpoint(port: int, latency_s: float) -> None:
    """An OpenAI-compatible chat endpoint: every answer after `latency_s`, requests counted per input."""
    app, asked = FastAPI(), Counter()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        body = await request.json()
        asked[body["messages"][-1]["content"]] += 1
        await asyncio.sleep(latency_s)
        return {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Good"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 1},
        }

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "remote-teacher", "object": "model"}]}

    @app.get("/asked")
    async def counts() -> dict:
        return {"requests": sum(asked.values()), "inputs": len(asked), "asked_twice": sum(n > 1 for n in asked.values())}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=4096)


def _pass(cfg: TaskConfig, rows: list[Example], url: str, kill_after: int | None) -> dict:
    before = httpx.get(f"{url}/asked").json()
    with tempfile.TemporaryDirectory() as tmp:
        store = TraceStore(Path(tmp) / "traces.jsonl")
        killed: list[int] = []
        if kill_after is not None:  # a worker process dies once this many answers are written
            append = store.append

            def append_and_kill(trace: dict) -> None:
                append(trace)
                if not killed and len(store.traces) >= kill_after:
                    victim = next(p for p in psutil.process_iter(["cmdline"]) if "_TeacherWorker" in " ".join(p.info["cmdline"] or []))
                    os.kill(victim.pid, signal.SIGKILL)
                    killed.append(victim.pid)

            store.append = append_and_kill
        start = time.perf_counter()
        summary = generate_traces(
            rows, store, lambda: make_teacher(cfg), progress=False, check=for_config(cfg).teacher_task().check, fanout=RayFanout(cfg.scale)
        )
        elapsed = time.perf_counter() - start
        store.close()
        written = len([line for line in (Path(tmp) / "traces.jsonl").read_text().splitlines() if line])
    after = httpx.get(f"{url}/asked").json()
    return {
        "inputs": len(rows),
        "elapsed_s": round(elapsed, 2),
        "rate_per_s": round(len(rows) / elapsed, 1),
        "failed": summary["failed"],
        "lines_written": written,
        "lost": len(rows) - written,
        "asked_twice": after["asked_twice"] - before["asked_twice"],
        "requests": after["requests"] - before["requests"],
        "killed_worker_pid": killed[0] if killed else None,
    }


def run(quick: bool = False, latency_s: float = 0.1, workers: int = 2, concurrency: int = 16) -> dict:
    n = 2_000 if quick else 20_000
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = multiprocessing.get_context("spawn").Process(target=_endpoint, args=(port, latency_s), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(f"{url}/asked")
            break
        except httpx.TransportError:
            time.sleep(0.1)
    os.environ.setdefault("RAY_worker_niceness", "0")  # a local Ray instance's workers at this process's priority
    cfg = TaskConfig()
    cfg.teacher = cfg.teacher.model_copy(
        update={"backend": "openai", "base_url": f"{url}/v1", "model": "remote-teacher", "api_key_env": "", "concurrency": concurrency}
    )
    cfg.teacher.top_logprobs = 0
    cfg.scale = ScaleConfig(runner="ray", teacher_workers=workers, shard_size=64, worker_cpus=0.5)
    ideal = workers * concurrency / latency_s
    try:
        steady = _pass(cfg, [Example(f"r{i}", f"input {i}: Interest_Rate {i % 31}") for i in range(n)], url, None)
        killed = _pass(cfg, [Example(f"k{i}", f"killed run {i}: Num_of_Loan {i % 9}") for i in range(n // 2)], url, n // 6)
    finally:
        server.kill()
    return {
        "latency_s": latency_s,
        "workers": workers,
        "concurrency": concurrency,
        "ideal_rate_per_s": ideal,
        "steady": steady,
        "share_of_ideal": round(steady["rate_per_s"] / ideal, 3),
        "with_a_worker_killed": killed,
        "target_share_ge_0_8": steady["rate_per_s"] / ideal >= 0.8,
        "target_none_asked_twice": steady["asked_twice"] == 0 and killed["asked_twice"] == 0,
        "target_none_lost": killed["lost"] == 0 and steady["lost"] == 0,
        "note": "asked twice after a kill: the answers of the shards the dead worker held, sent again to its restarted actor",
    }
