"""The service under load: uvicorn on a loopback port, real HTTP clients.

Figures: throughput and p50/p95 latency with 1 client vs 16 concurrent clients; latency when
consecutive requests alternate adapters vs stay on one; failed requests while `/admin/reload`
swaps in a newly promoted adapter under 8 steady clients, and their p95 latency during the reload
against the p95 of the same traffic before it.
Targets: 16-client throughput >= 3x one client; adapter switching adds <= 5% latency;
zero failed requests across a reload; p95 during a reload <= 1.5x the steady p95.
Memory: resident memory (VmRSS, and its peak VmHWM) of `distill-slm serve` in its own process with
the base model and one adapter vs the base model and four (the production adapter registered as
sft, kd, dpo and selftrain), after one request to every variant.
Overload (first, self-contained: the embedded model with a fresh LoRA, `distill-slm serve` in its own process, a lane
capped at `max_queue` 32): 500 concurrent clients, one request each, while /healthz is polled. Targets: 0 server
errors (a 5xx other than 503); every refusal a 503/429 answered in < 100 ms; /healthz p99 < 100 ms during the burst;
resident memory back within 100 MB of idle after it; every accepted request answered within its deadline.

The registry (default `runs/`, e.g. after `make demo`) is copied to a temporary folder first,
so the promotion the reload phase makes never touches it.

    distill-slm bench service [--runs-dir runs] [--quick] [--json]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import yaml

from bench.calibrated import eval_rows
from core.common.ports import free_port
from core.registry import Registry
from core.settings import ModelSettings, ServiceSettings
from service.main import serve_in_thread, wait_until_ready

KEY = "bench-admin-key"


def _timed(client: httpx.Client, url: str, variant: str, task: str, text: str) -> float:
    start = time.perf_counter()
    r = client.post(f"{url}/infer/{variant}", json={"task": task, "input": text}, timeout=120)
    r.raise_for_status()
    return (time.perf_counter() - start) * 1000


def _load(url: str, task: str, texts: list[str], clients: int) -> dict:
    def worker(chunk: list[str]) -> list[float]:
        with httpx.Client() as client:
            return [_timed(client, url, "sft", task, t) for t in chunk]

    chunks = [texts[i::clients] for i in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [ms for part in pool.map(worker, chunks) for ms in part]
    wall = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 2),
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1),
        "latency_ms_p95": round(float(np.percentile(latencies, 95)), 1),
    }


def _status_mb(pid: int) -> dict:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: round(int(fields[name].split()[0]) / 1024, 1) for name in ("VmRSS", "VmHWM")}


def _copy_production(source: Registry, target: Registry, task: str, method: str) -> str:
    """Register `source`'s production adapter of `task` again, in `target`, as a new version of `method`."""
    production = source.path(task, source.aliases(task)["production"])
    return target.register(
        task, method, production, source.metrics(task, source.aliases(task)["production"]), (production / "config.yaml").read_text(), {}
    )


def service_memory(source: Path, task: str, methods: list[str], text: str) -> dict:
    """Resident memory of `distill-slm serve` (own process) serving the task's production adapter as each method."""
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp) / "runs")
        for method in methods:
            registry.promote(task, _copy_production(Registry(source), registry, task, method), force=True)
        server, url = _serve_process(registry.root, {"DISTILL_SLM_AUDIT_LOG": str(Path(tmp) / "audit.jsonl")})
        try:
            with httpx.Client() as client:
                for variant in ["base", *methods]:
                    _timed(client, url, variant, task, text)
            return {"adapters": len(methods)} | {f"{k}_mb": v for k, v in _status_mb(server.pid).items()}
        finally:
            server.terminate()
            server.wait(30)


def _serve_process(runs: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """`distill-slm serve` in its own process on a free loopback port; returns once /readyz answers 200."""
    port = free_port()
    command = [sys.executable, "-m", "distill_slm.cli", "serve", "--port", str(port), "--runs-dir", str(runs)]
    server = subprocess.Popen(command, env=os.environ | env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    if wait_until_ready(url, 300, lambda: server.poll() is None):
        return server, url
    server.kill()
    raise RuntimeError("the service did not become ready")


def overload(clients: int = 500, max_queue: int = 32, deadline_s: float = 60.0) -> dict:
    """A burst of `clients` concurrent requests against one classification lane capped at `max_queue` (module docstring)."""
    from core.common.config import LoraSettings, TaskConfig
    from core.model.loading import attach_lora, load_model

    texts = [r.text for r in eval_rows(8)]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TaskConfig()
        model, _ = load_model(cfg.model, ModelSettings())
        attach_lora(model, LoraSettings(r=8)).save_pretrained(Path(tmp) / "adapter")
        del model
        registry = Registry(Path(tmp) / "runs")
        registry.promote(
            cfg.name,
            registry.register(cfg.name, "sft", Path(tmp) / "adapter", {"macro_f1": 0.0}, yaml.safe_dump(cfg.model_dump(mode="json")), {}),
            force=True,
        )
        env = {
            "DISTILL_SLM_MAX_QUEUE": str(max_queue),
            "DISTILL_SLM_REQUEST_TIMEOUT_S": str(deadline_s),
            "DISTILL_SLM_AUDIT_LOG": str(Path(tmp) / "audit.jsonl"),
        }
        server, url = _serve_process(registry.root, env)
        try:
            with httpx.Client() as client:
                for text in texts:  # warm-up
                    client.post(f"{url}/infer/sft", json={"task": cfg.name, "input": text}, timeout=120)
            time.sleep(2.0)
            idle = _status_mb(server.pid)
            before = _server_seconds(url)
            figures = asyncio.run(_burst(url, cfg.name, texts, clients, deadline_s))
            figures["server_side"] = _server_seconds(url, before)
            time.sleep(5.0)
            after = _status_mb(server.pid)
        finally:
            server.terminate()
            server.wait(30)
    figures |= {"clients": clients, "max_queue": max_queue, "deadline_s": deadline_s}
    figures["memory_mb"] = {"idle": idle["VmRSS"], "after": after["VmRSS"], "peak": after["VmHWM"]}
    figures["target_zero_server_errors"] = figures["server_errors"] == 0
    # The service's own clock (distill_slm_http_seconds): from a request's arrival to its answer. The client-side figures
    # above also hold the client's own queueing: one Python process opening 500 connections on the same 2 cores.
    server = figures["server_side"]
    figures["target_refusals_under_100ms"] = server["refused"] > 0 and server["refused_under_100ms"] == server["refused"]
    figures["target_healthz_p99_under_100ms"] = server["healthz"] > 0 and server["healthz_under_100ms"] >= 0.99 * server["healthz"]
    figures["target_memory_back_within_100mb"] = after["VmRSS"] - idle["VmRSS"] <= 100
    figures["target_accepted_within_deadline"] = figures["accepted_ms_max"] <= deadline_s * 1000
    return figures


def _server_seconds(url: str, before: dict | None = None) -> dict:
    """From the service's /metrics: how many refusals (503/429 on /infer) and health checks it answered, and how many
    of each within 100 ms of their arrival (histogram buckets), less what `before` counted."""
    counts = {"refused": 0.0, "refused_under_100ms": 0.0, "healthz": 0.0, "healthz_under_100ms": 0.0}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if not line.startswith("distill_slm_http_seconds_bucket{"):
            continue
        labels, value = line.rsplit("}", 1)[0], float(line.rsplit(" ", 1)[1])  # a route template holds braces itself
        name = "refused" if '"/infer/{variant}"' in labels and ('status="503"' in labels or 'status="429"' in labels) else None
        name = "healthz" if '"/healthz"' in labels and 'status="200"' in labels else name
        if name and 'le="+Inf"' in labels:
            counts[name] += value
        elif name and 'le="0.1"' in labels:
            counts[name + "_under_100ms"] += value
    return {k: v - (before or {}).get(k, 0.0) for k, v in counts.items()}


async def _burst(url: str, task: str, texts: list[str], clients: int, deadline_s: float) -> dict:
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(limits=limits, timeout=deadline_s + 30) as client:
        done = asyncio.Event()
        health: list[float] = []

        async def poll_health() -> None:
            while not done.is_set():
                start = time.perf_counter()
                await client.get(f"{url}/healthz")
                health.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(0.02)

        async def one(i: int) -> tuple[int, float]:
            start = time.perf_counter()
            r = await client.post(
                f"{url}/infer/sft", json={"task": task, "input": texts[i % len(texts)]}, headers={"X-API-Key": f"client-{i}"}
            )
            return r.status_code, (time.perf_counter() - start) * 1000

        poller = asyncio.create_task(poll_health())
        start = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(clients)))
        wall = time.perf_counter() - start
        done.set()
        await poller
    refused = [ms for status, ms in results if status in (429, 503)]
    accepted = [ms for status, ms in results if status == 200]
    return {
        "answered_200": len(accepted),
        "refused": len(refused),
        "server_errors": sum(1 for status, _ in results if status >= 500 and status != 503),
        "other_statuses": sorted({status for status, _ in results} - {200, 429, 503}),
        "refused_ms_p50": round(float(np.percentile(refused, 50)), 1) if refused else None,
        "refused_ms_max": round(max(refused), 1) if refused else None,
        "accepted_ms_p50": round(float(np.percentile(accepted, 50)), 1) if accepted else None,
        "accepted_ms_max": round(max(accepted), 1) if accepted else None,
        "healthz_ms_p50": round(float(np.percentile(health, 50)), 1) if health else None,
        "healthz_ms_p99": round(float(np.percentile(health, 99)), 1) if health else None,
        "healthz_polls": len(health),
        "burst_s": round(wall, 2),
    }


def run(quick: bool = False, runs_dir: str = "runs") -> dict:
    figures: dict = {"overload": overload(clients=100 if quick else 500)}
    print(f"overload: {figures['overload']}", file=sys.stderr)
    source = Registry(runs_dir)
    tasks = [t for t in source.tasks() if source.aliases(t).get("production")]
    if not tasks:
        figures["load_reload_memory"] = f"skipped: {runs_dir} has no task with a production adapter (run `make demo` or pass --runs-dir)"
        return figures
    task = tasks[0]
    texts = [r.text for r in eval_rows(8 if quick else 32)]
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        shutil.copytree(Path(runs_dir) / task, runs / task)
        server, url = serve_in_thread(ServiceSettings(runs_dir=runs, admin_api_keys=[KEY], audit_log=Path(tmp) / "audit.jsonl"))
        try:
            _load(url, task, texts[:4], 1)  # warm-up
            one = _load(url, task, texts, 1)
            many = _load(url, task, texts * 2, 16)

            with httpx.Client() as client:
                same = [_timed(client, url, "sft", task, t) for t in texts]
                switching = [_timed(client, url, ("base", "sft")[i % 2], task, t) for i, t in enumerate(texts)]
                base_only = [_timed(client, url, "base", task, t) for t in texts]
            # Alternating requests are half base, half sft: compare with the same mix without switching.
            unswitched_ms = float(np.mean(same) + np.mean(base_only)) / 2

            registry = Registry(runs)
            method = registry.aliases(task)["production"].split("/")[0]
            fresh = _copy_production(registry, registry, task, method)
            registry.promote(task, fresh, force=True)
            failures, answered, stop = [], [], threading.Event()
            spans: list[tuple[float, float]] = []  # (start, end) of every answered request

            def steady() -> None:
                with httpx.Client() as client:
                    i = 0
                    while not stop.is_set():
                        begun = time.perf_counter()
                        r = client.post(f"{url}/infer/{method}", json={"task": task, "input": texts[i % len(texts)]}, timeout=120)
                        if r.status_code == 200:
                            answered.append(r.json().get("adapter"))
                            spans.append((begun, time.perf_counter()))
                        else:
                            failures.append(r.status_code)
                        i += 1

            load = [threading.Thread(target=steady) for _ in range(8)]
            for t in load:
                t.start()
            time.sleep(2.0 if quick else 8.0)  # steady traffic without a reload: the reference p95
            reload_start = time.perf_counter()
            reload = httpx.post(f"{url}/admin/reload", headers={"X-API-Key": KEY}, timeout=300)
            reload_end = time.perf_counter()
            time.sleep(1.0)
            stop.set()
            for t in load:
                t.join(60)
            steady_ms = [(e - b) * 1000 for b, e in spans if e < reload_start and b > spans[0][0] + 1.0]  # past the ramp-up
            during_ms = [(e - b) * 1000 for b, e in spans if b < reload_end and e > reload_start]
        finally:
            server.should_exit = True
    figures |= {
        "task": task,
        "one_client": one,
        "sixteen_clients": many,
        "throughput_ratio_16_over_1": round(many["requests_per_s"] / one["requests_per_s"], 2),
        "same_adapter_ms_mean": round(float(np.mean(same)), 1),
        "alternating_adapters_ms_mean": round(float(np.mean(switching)), 1),
        "switching_overhead": round(float(np.mean(switching)) / unswitched_ms - 1, 4),
        "reload_status": reload.status_code,
        "reload_s": round(reload_end - reload_start, 3),
        "steady_p95_ms": round(float(np.percentile(steady_ms, 95)), 1) if steady_ms else None,
        "during_reload_p95_ms": round(float(np.percentile(during_ms, 95)), 1) if during_ms else None,
        "during_reload_requests": len(during_ms),
        "reload_requests_answered": len(answered),
        "reload_requests_failed": len(failures),
        "reload_served_after": answered[-1] if answered else None,
        "reload_promoted": fresh,
    }
    one_adapter = service_memory(Path(runs_dir), task, ["sft"], texts[0])
    four_adapters = service_memory(Path(runs_dir), task, ["sft", "kd", "dpo", "selftrain"], texts[0])
    figures["memory"] = {
        "one_adapter": one_adapter,
        "four_adapters": four_adapters,
        "mb_per_extra_adapter": round((four_adapters["VmRSS_mb"] - one_adapter["VmRSS_mb"]) / 3, 1),
    }
    figures["target_throughput_ge_3x"] = figures["throughput_ratio_16_over_1"] >= 3.0
    figures["target_switching_le_5pct"] = figures["switching_overhead"] <= 0.05
    figures["target_zero_failed_on_reload"] = not failures and reload.status_code == 200
    if steady_ms and during_ms:
        figures["reload_p95_ratio"] = round(figures["during_reload_p95_ms"] / figures["steady_p95_ms"], 2)
        figures["target_reload_p95_le_1.5x"] = figures["reload_p95_ratio"] <= 1.5
    return figures
