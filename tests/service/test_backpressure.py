"""A service that faces clients it does not control: bounded lanes, deadlines, callers that leave, rate limits, keys,
bodies without a length, a half-registered task. uvicorn on loopback over the tiny model; the model is held busy by
taking the engine's lock from the test, so every case is decided by the service's rules, not by this CPU's speed."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import batch_size_counts, creditmix_versions

MAX_QUEUE = 4


@pytest.fixture(scope="module")
def busy_server(tiny_model_dir, tmp_path_factory):
    from core.settings import ServiceSettings
    from service.main import serve_in_thread

    root = tmp_path_factory.mktemp("backpressure")
    registry, cfg = creditmix_versions(tiny_model_dir, root)
    registry.promote("creditmix", "sft/v0001", cfg.promotion.model_copy(update={"guard_min": {}}))  # only gated versions are served
    (root / "runs" / "half-registered" / "sft").mkdir(parents=True)  # a first registration killed before its version
    settings = ServiceSettings(
        runs_dir=root / "runs",
        audit_log=root / "audit.jsonl",
        max_queue=MAX_QUEUE,
        request_timeout_s=3.0,
        rate_limit_per_s=2.0,
        rate_limit_burst=3,
        max_body_bytes=100_000,
        client_api_keys=["client-1"],
    )
    srv, url = serve_in_thread(settings)
    yield {"url": url, "runtime": srv.config.app.state.runtime, "settings": settings}
    srv.should_exit = True


CLIENT = httpx.Client(limits=httpx.Limits(max_connections=64))  # one client: the timings are the service's, not TLS set-up's


def _ask(url: str, key: str, timeout: float = 30.0) -> tuple[int, float, dict, str]:
    start = time.perf_counter()
    try:
        r = CLIENT.post(
            f"{url}/infer/sft", json={"task": "creditmix", "input": "Num_of_Loan: 3"}, headers={"X-API-Key": key}, timeout=timeout
        )
    except httpx.TimeoutException:
        return 0, time.perf_counter() - start, {}, ""
    return r.status_code, time.perf_counter() - start, dict(r.headers), r.text


def test_a_full_lane_refuses_at_once_while_health_answers(busy_server):
    url, runtime = busy_server["url"], busy_server["runtime"]
    pool = ThreadPoolExecutor(24)
    with runtime.engine.lock:  # the model is busy: nothing admitted can finish
        futures = [pool.submit(_ask, url, f"caller-{i}") for i in range(20)]  # a key each: no rate limit applies
        time.sleep(1.0)
        health = [CLIENT.get(f"{url}/healthz").elapsed.total_seconds() for _ in range(10)]
        ready = CLIENT.get(f"{url}/readyz").json()
        refused = [f.result() for f in futures if f.done()]
    pool.shutdown(wait=True)  # the model is free again: the admitted ones are answered
    answered = [f.result() for f in futures if f.result() not in refused]
    assert len(refused) == 20 - MAX_QUEUE and all(status == 503 for status, *_ in refused), refused
    assert all(seconds < 0.5 and "retry-after" in headers for _, seconds, headers, _ in refused), [s for _, s, *_ in refused]
    assert max(health) < 0.1 and ready["in_flight"]["classification"] == MAX_QUEUE
    assert len(answered) == MAX_QUEUE and all(status == 200 for status, *_ in answered), answered


def test_a_request_past_its_deadline_is_refused_and_dropped(busy_server):
    url, runtime = busy_server["url"], busy_server["runtime"]
    before = batch_size_counts(url, "creditmix", "sft").get("+Inf", 0)
    with runtime.engine.lock:
        first = threading.Thread(target=_ask, args=(url, "deadline-0"))  # taken by the lane's worker, then waits on the model
        first.start()
        time.sleep(0.3)
        status, seconds, headers, text = _ask(url, "deadline-1")  # waits in the lane's queue past the deadline (3 s)
    first.join()
    time.sleep(0.3)
    assert status == 503 and "request_timeout_s" in text and 2.5 < seconds < 4.5 and "retry-after" in headers
    assert batch_size_counts(url, "creditmix", "sft").get("+Inf", 0) == before + 1  # only the first ever ran


def test_a_caller_that_disconnects_frees_its_place_and_its_work_is_dropped(busy_server):
    url, runtime = busy_server["url"], busy_server["runtime"]
    before = batch_size_counts(url, "creditmix", "sft").get("+Inf", 0)
    with runtime.engine.lock:
        first = threading.Thread(target=_ask, args=(url, "leaver-0"))
        first.start()
        time.sleep(0.3)
        gone = [_ask(url, f"leaver-{i}", timeout=0.5) for i in (1, 2)]  # the client gives up and closes its connection
        time.sleep(0.6)  # the service notices within a quarter of a second
        in_flight = runtime.in_flight["classification"]
    first.join()
    time.sleep(0.3)
    assert [status for status, *_ in gone] == [0, 0] and in_flight == 1
    assert batch_size_counts(url, "creditmix", "sft").get("+Inf", 0) == before + 1


def test_one_caller_over_its_rate_gets_429_with_retry_after(busy_server):
    statuses = [_ask(busy_server["url"], "client-1") for _ in range(6)]
    limited = [(status, headers) for status, _, headers, _ in statuses if status == 429]
    assert statuses[0][0] == 200 and limited and all(int(h["retry-after"]) >= 1 for _, h in limited)


def test_keys_are_required_when_the_operator_says_so(busy_server, monkeypatch):
    monkeypatch.setattr(busy_server["settings"], "require_client_key", True)
    url = busy_server["url"]
    assert _ask(url, "")[0] == 401
    assert _ask(url, "not-a-key")[0] == 403
    assert httpx.post(
        f"{url}/infer/sft", json={"task": "creditmix", "input": "x"}, headers={"Authorization": "Bearer client-1"}
    ).status_code in (
        200,
        429,
    )
    assert httpx.get(f"{url}/healthz").status_code == 200  # health needs no key


def test_a_body_without_a_length_is_limited_while_it_is_read(busy_server):
    sent = []

    def chunks():
        for _ in range(50):  # 5 MB in 100 KB chunks, no Content-Length (chunked transfer)
            sent.append(1)
            yield b"x" * 100_000

    try:
        r = httpx.post(f"{busy_server['url']}/infer/sft", content=chunks(), headers={"content-type": "application/json"}, timeout=30)
        status = r.status_code
    except httpx.HTTPError:  # the service answered and closed while the client was still sending
        status = 413
    assert status == 413 and len(sent) < 50


def test_a_task_folder_without_versions_is_skipped_and_named(busy_server):
    ready = httpx.get(f"{busy_server['url']}/readyz").json()
    assert "half-registered" in ready["skipped_tasks"] and "creditmix:sft" in ready["served"]
    assert ready["decode_path"] == "fp32" and ready["sandbox"]["isolation"] in ("bubblewrap", "limits", "none")
    assert busy_server["runtime"].reload("test")["creditmix:sft"]  # a reload skips it too
