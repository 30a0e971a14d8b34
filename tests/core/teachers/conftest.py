"""An endpoint that misbehaves on purpose (429, 500, slow, cut connections) in front of the real service."""

import asyncio
import json
import threading
from collections import deque

import pytest

from core.common.config import TaskConfig


class FaultInjector:
    """ASGI middleware: each chat-completions request takes the next planned fault ('ok' when none is left)."""

    def __init__(self, app) -> None:
        self.app, self.plan, self.seen = app, deque(), 0
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            return await self.app(scope, receive, send)
        with self._lock:
            self.seen += 1
            action = self.plan.popleft() if self.plan else "ok"
        if action in ("429", "500"):
            headers = [(b"content-type", b"application/json")] + ([(b"retry-after", b"0.2")] if action == "429" else [])
            await send({"type": "http.response.start", "status": int(action), "headers": headers})
            return await send({"type": "http.response.body", "body": b'{"error": "injected"}'})
        if action == "slow":
            await asyncio.sleep(2.0)
        if action == "cut":  # promise a body, send a byte of it, hang up
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"500")]})
            await send({"type": "http.response.body", "body": b"{", "more_body": True})
            raise ConnectionResetError("injected cut")
        if action in ("empty", "outside"):
            content = "" if action == "empty" else "I would rather not say"
            body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            return await send({"type": "http.response.body", "body": body})
        if action == "html":  # a proxy's error page, answered 200
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
            return await send({"type": "http.response.body", "body": b"<html><body>upstream hiccup</body></html>"})
        if action.startswith("retry-after:"):  # a 429 whose Retry-After is negative, not a number, NaN ...
            headers = [(b"content-type", b"application/json"), (b"retry-after", action.split(":", 1)[1].encode())]
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            return await send({"type": "http.response.body", "body": b'{"error": "injected"}'})
        if action == "garbage":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            return await send({"type": "http.response.body", "body": b'{"choices": []}'})
        return await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def faulty(server):
    from service.main import serve_in_thread

    holder = {}

    def wrap(app):
        holder["injector"] = FaultInjector(app)
        return holder["injector"]

    srv, url = serve_in_thread(server["settings"], wrap=wrap)
    yield {"url": url, "faults": holder["injector"]}
    srv.should_exit = True


def openai_cfg(url: str, **teacher) -> TaskConfig:
    cfg = TaskConfig()
    cfg.teacher = cfg.teacher.model_copy(
        update={
            "backend": "openai",
            "base_url": url + "/v1",
            "model": "creditmix:sft",
            "api_key_env": "",
            "timeout_s": 1.0,
            "max_retries": 4,
            "concurrency": 4,
            **teacher,
        }
    )
    return cfg
