"""A Prefect server that lives exactly as long as the command that started it.

With no `PREFECT_API_URL`, Prefect starts a temporary server in a child process and stops it at
exit; a run killed with SIGKILL never reaches that exit, and the server outlives it. This one is
started the same way (uvicorn on Prefect's app factory, SQLite, loopback) but asks the kernel to
kill it when its parent dies (`PR_SET_PDEATHSIG`, Linux), so nothing a run started survives it.
Elsewhere it falls back to Prefect's own temporary server.

    with run_server():        # no-op when PREFECT_API_URL is set
        distill(cfg)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
from prefect.settings import PREFECT_API_URL, temporary_settings

from core.common.ports import free_port

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.contextmanager
def run_server(startup_timeout_s: float = 120.0) -> Iterator[str | None]:
    """Start a Prefect server tied to this process for the duration; yield its API URL (None: one was configured)."""
    if PREFECT_API_URL.value() or not sys.platform.startswith("linux"):
        yield PREFECT_API_URL.value()
        return
    port = free_port()
    env = os.environ | {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    args = [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"]
    server = subprocess.Popen(args, env=env, preexec_fn=_die_with_parent)  # noqa: PLW1509 (prctl must run in the child)
    url = f"http://127.0.0.1:{port}/api"
    print(f"prefect server for this run: {url} (pid {server.pid})", file=sys.stderr, flush=True)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the Prefect server exited with code {server.returncode} before it answered")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not answer within {startup_timeout_s:.0f} s")
            time.sleep(0.2)
        with temporary_settings({PREFECT_API_URL: url}):
            yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
