"""The app around the routes: project errors as one JSON shape with the right status, the body limit with and without a
declared length, requests counted by route template, and the loopback server helpers. The app is the real one
(`create_app`), its model not loaded: these answers come before any model is needed."""

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter, Histogram

from core.errors import (
    DocumentTooLong,
    InputTooLong,
    InvalidRequest,
    Overloaded,
    RegistryError,
    SandboxUnavailable,
    SchemaError,
    UnknownVariant,
)
from core.settings import ServiceSettings
from service.main import BodyLimit, CountRequests, create_app, serve_app_in_thread, wait_until_ready

RAISED = [
    (InputTooLong("messages", "9000 characters"), 413, "too_large", "messages"),
    (DocumentTooLong("4000 tokens"), 413, "too_large", "input"),
    (InvalidRequest("max_tokens", "0 is too small"), 422, "invalid_request", "max_tokens"),
    (SchemaError("/properties/x", "unknown keyword"), 422, "invalid_request", "json_schema"),
    (UnknownVariant("creditmix:kd is not served"), 404, "unknown_model", "task"),
    (RegistryError("no version v0009"), 404, "not_found", "ref"),
    (Overloaded("the lane is full", retry_after_s=2.5), 503, "overloaded", None),
    (SandboxUnavailable("bubblewrap is missing"), 503, "sandbox_unavailable", "tests"),
]


@pytest.fixture
def app(tmp_path):
    app = create_app(ServiceSettings(runs_dir=tmp_path / "runs", audit_log=tmp_path / "audit.jsonl", max_body_bytes=1000))
    for i, (error, *_) in enumerate(RAISED):
        app.add_api_route(f"/boom/{i}", _raising(error), methods=["POST"])
    return app


def _raising(error: Exception):
    def boom():
        raise error

    return boom


@pytest.mark.parametrize("i", range(len(RAISED)))
def test_a_project_error_becomes_its_status_in_openais_error_shape(app, i):
    error, status, kind, field = RAISED[i]
    response = TestClient(app).post(f"/boom/{i}")
    assert response.status_code == status
    body = response.json()["error"]
    assert body["type"] == body["code"] == kind and body["param"] == body["field"] == field and body["message"]
    if isinstance(error, Overloaded):
        assert response.headers["retry-after"] == "3"  # rounded up: a client never retries early


def test_a_request_before_the_model_is_loaded_is_told_to_come_back(app):
    response = TestClient(app).post("/v1/chat/completions", json={"model": "creditmix:sft", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 503 and "not loaded" in response.json()["error"]["message"]


def test_bodies_over_the_limit_are_refused_with_or_without_a_declared_length(app):
    client, refused = TestClient(app), "over the limit of 1000"
    declared = client.post("/boom/0", content=b"x" * 1001)
    assert declared.status_code == 413 and refused in declared.json()["error"]["message"]
    lying = client.post("/boom/0", content=b"x", headers={"content-length": "12abc"})
    assert lying.status_code == 413

    def chunks():
        for _ in range(20):
            yield b"y" * 100

    streamed = client.post("/boom/0", content=chunks())  # no Content-Length: counted while read
    assert streamed.status_code == 413 and "without a Content-Length" in streamed.json()["error"]["message"]


def test_a_body_under_the_limit_without_a_length_reaches_the_route_whole():
    seen = []

    async def echo(scope, receive, send):
        message = await receive()
        seen.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = BodyLimit(echo, max_bytes=1000, on_refused=lambda scope, message: seen.append(message))
    response = TestClient(limited).post("/", content=(b"z" * 100 for _ in range(5)))
    assert response.status_code == 200 and seen == [b"z" * 500]


def test_requests_are_counted_by_route_template_and_status(app):
    registry = CollectorRegistry()
    counter = Counter("requests", "", ["route", "status"], registry=registry)
    seconds = Histogram("seconds", "", ["route", "status"], registry=registry)
    client = TestClient(CountRequests(app, counter, seconds))
    client.post("/boom/4")
    client.post("/boom/4")
    client.get("/no/such/route")
    assert registry.get_sample_value("requests_total", {"route": "/boom/4", "status": "404"}) == 2
    assert registry.get_sample_value("requests_total", {"route": "<unmatched>", "status": "404"}) == 1
    assert registry.get_sample_value("seconds_count", {"route": "/boom/4", "status": "404"}) == 2


def test_waiting_for_a_server_ends_when_it_is_gone_or_never_answers():
    assert not wait_until_ready("http://127.0.0.1:9", timeout_s=60, alive=lambda: False)  # gone: no 60 s wait
    with pytest.raises(RuntimeError, match="did not become ready"):
        serve_app_in_thread(lambda scope, receive, send: None, ready_timeout_s=1)  # an app that never answers /readyz


def test_any_app_with_a_readyz_route_is_served_on_loopback():
    from fastapi import FastAPI

    app = FastAPI()
    app.get("/readyz")(lambda: {"ok": True})
    app.get("/hello")(lambda: "hi")
    server, url = serve_app_in_thread(app)
    try:
        assert url.startswith("http://127.0.0.1:") and httpx.get(url + "/hello").json() == "hi"
    finally:
        server.should_exit = True
