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

The registry (default `runs/`, e.g. after `make demo`) is copied to a temporary folder first,
so the promotion the reload phase makes never touches it.

    distill-slm bench service [--runs-dir runs] [--quick] [--json]
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from bench.calibrated import eval_rows
from core.registry import Registry
from core.settings import Settings
from service.main import serve_in_thread

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
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = os.environ | {"DISTILL_SLM_AUDIT_LOG": str(Path(tmp) / "audit.jsonl")}
        command = [sys.executable, "-m", "distill_slm.cli", "serve", "--port", str(port), "--runs-dir", str(registry.root)]
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            with httpx.Client() as client:
                for variant in ["base", *methods]:
                    _timed(client, url, variant, task, text)
            return {"adapters": len(methods)} | {f"{k}_mb": v for k, v in _status_mb(server.pid).items()}
        finally:
            server.terminate()
            server.wait(30)


def run(quick: bool = False, runs_dir: str = "runs") -> dict:
    source = Registry(runs_dir)
    tasks = [t for t in source.tasks() if source.aliases(t).get("production")]
    if not tasks:
        raise SystemExit(f"{runs_dir} has no task with a production adapter; run `make demo` first or pass --runs-dir")
    task = tasks[0]
    texts = [r.text for r in eval_rows(8 if quick else 32)]
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        shutil.copytree(Path(runs_dir) / task, runs / task)
        server, url = serve_in_thread(Settings(runs_dir=runs, admin_api_keys=[KEY], audit_log=Path(tmp) / "audit.jsonl"))
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
    figures = {
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
