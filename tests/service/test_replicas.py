"""Replicas follow the registry: two `distill-slm serve` processes over one registry, 8 steady clients, a promotion
made by another process (as the flow makes it). Both serve the new version within 10 s of the alias moving, no request
fails; a version that cannot be loaded leaves the old one served and says why in /readyz."""

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from core.common.ports import free_port
from core.serving.audit import read_audit
from service.main import wait_until_ready
from tests.conftest import creditmix_versions


def _serve(runs, audit) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = os.environ | {"DISTILL_SLM_REGISTRY_POLL_S": "0.5", "DISTILL_SLM_AUDIT_LOG": str(audit), "DISTILL_SLM_RATE_LIMIT_PER_S": "10000"}
    command = [sys.executable, "-m", "distill_slm.cli", "serve", "--port", str(port), "--runs-dir", str(runs)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def replicas(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("replicas")
    registry, _ = creditmix_versions(tiny_model_dir, root, seeds=(1, 2, 3))
    registry.promote("creditmix", "sft/v0001", force=True)
    started = [_serve(registry.root, root / f"audit{i}.jsonl") for i in range(2)]
    try:
        for process, url in started:
            assert wait_until_ready(url, 180, lambda p=process: p.poll() is None), "a replica did not start"
        yield registry, [url for _, url in started]
    finally:
        for process, _ in started:
            process.kill()
            process.wait()


def _ask(text: str) -> dict:
    return {"model": "creditmix:production", "messages": [{"role": "user", "content": text}]}


def _served(url: str) -> str | None:
    return httpx.get(url + "/readyz", timeout=10).json()["refs"].get("creditmix:production")


def test_both_replicas_follow_a_promotion_under_load_without_a_failed_request(replicas):
    registry, urls = replicas
    assert [_served(u) for u in urls] == ["sft/v0001", "sft/v0001"]
    failures, answered, stop = [], [0], threading.Event()

    def client(i: int) -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                url = urls[i % 2]
                try:
                    r = http.post(url + "/v1/chat/completions", json=_ask(f"Interest_Rate: {i}"))
                    if r.status_code != 200:
                        failures.append((url, r.status_code, r.text[:200]))
                    answered[0] += 1
                except httpx.HTTPError as exc:
                    failures.append((url, type(exc).__name__))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    before = registry.generation()
    moved_at = time.monotonic()
    registry.promote("creditmix", "sft/v0002", force=True)  # another process moves the alias; nobody calls the replicas
    assert registry.generation() == before + 1
    followed = {}
    while len(followed) < 2 and time.monotonic() - moved_at < 10:
        for url in urls:
            if url not in followed and _served(url) == "sft/v0002":
                followed[url] = round(time.monotonic() - moved_at, 2)
        time.sleep(0.1)
    time.sleep(1.0)  # traffic on the new version
    stop.set()
    for t in threads:
        t.join()
    assert len(followed) == 2, f"within 10 s only {followed} followed"
    assert failures == [] and answered[0] > 16
    r = httpx.post(urls[1] + "/v1/chat/completions", json=_ask("x"), timeout=60)
    assert r.json()["distill_slm"]["adapter"] == "sft/v0002"


def test_a_version_that_cannot_load_leaves_the_old_one_served_and_says_why(replicas):
    registry, urls = replicas
    served = _served(urls[0])
    broken = registry.path("creditmix", "sft/v0003")
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    registry.promote("creditmix", "sft/v0003", force=True)
    generation = registry.generation()
    deadline = time.monotonic() + 20
    while (status := httpx.get(urls[0] + "/readyz", timeout=10).json())["registry_generation"] != generation:
        assert time.monotonic() < deadline, "the replica never tried the new generation"
        time.sleep(0.2)
    assert "generation" in status["registry_watch_error"] and status["refs"]["creditmix:production"] == served
    r = httpx.post(urls[0] + "/v1/chat/completions", json=_ask("x"), timeout=60)
    assert r.status_code == 200 and r.json()["distill_slm"]["adapter"] == served


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx-light)")
def test_the_documented_nginx_config_spreads_requests_over_the_replicas(replicas, tmp_path):
    """deployments/nginx-replicas.conf as committed, only its ports changed: requests reach both replicas."""
    registry, urls = replicas
    port = free_port()
    conf = (Path(__file__).parents[2] / "deployments" / "nginx-replicas.conf").read_text()
    for default, url in zip(("127.0.0.1:8001", "127.0.0.1:8002"), urls):
        conf = conf.replace(default, url.removeprefix("http://"))
    conf = conf.replace("listen 8000;", f"listen 127.0.0.1:{port};").replace("/tmp/distill-slm-nginx.pid", str(tmp_path / "nginx.pid"))
    (tmp_path / "nginx.conf").write_text(conf)
    nginx = subprocess.Popen(
        ["nginx", "-e", "stderr", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        front = f"http://127.0.0.1:{port}"
        assert wait_until_ready(front, 30, lambda: nginx.poll() is None), nginx.stderr.read().decode()[-500:]
        before = [len(read_audit(registry.root.parent / f"audit{i}.jsonl")) for i in range(2)]
        with httpx.Client(timeout=60) as http:
            for i in range(12):
                assert http.post(front + "/v1/chat/completions", json=_ask(f"Outstanding_Debt: {i}")).status_code == 200
        after = [len(read_audit(registry.root.parent / f"audit{i}.jsonl")) for i in range(2)]
        assert all(b > a for a, b in zip(before, after)) and sum(after) - sum(before) == 12
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
