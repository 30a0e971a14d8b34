"""A request's deadline and cancellation, seen by every queue the request waits in.

The runtime opens a `Deadline` for each request (`with Deadline(60): ...`); the batcher's lanes and the model thread
wait for their work through `wait()`, so queued work whose caller has gone (the HTTP connection closed: `cancel()`)
or whose deadline has passed is dropped before it runs, and the caller gets `Overloaded` (503) at once.

    with Deadline(seconds=60) as deadline:       # the route calls deadline.cancel() when the client disconnects
        answer = runtime.infer(...)              # lanes and the model thread wait with wait(future)
"""

from __future__ import annotations

import contextvars
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from core.errors import Overloaded

_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("request_deadline", default=None)


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self.cancelled = threading.Event()
        self._token: contextvars.Token | None = None

    def __enter__(self) -> Deadline:
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _current.reset(self._token)

    def cancel(self) -> None:
        self.cancelled.set()

    def check(self) -> None:
        """Overloaded if the caller has gone or the deadline has passed."""
        if self.cancelled.is_set():
            raise Overloaded("the caller went away; its queued work was dropped")
        if time.monotonic() >= self.expires_at:
            raise Overloaded(f"no answer within the request deadline of {self.seconds:g} s (request_timeout_s)", retry_after_s=5)


def current() -> Deadline | None:
    return _current.get()


def wait(future: Future, timeout: float | None = None):
    """The future's result, waiting no longer than the current request's deadline (if any) or `timeout`; past either,
    or once the caller has gone, the future is cancelled (dropped if it has not started) and Overloaded raised."""
    deadline = current()
    limit = None if timeout is None else time.monotonic() + timeout
    while True:
        ends = [t for t in (limit, deadline.expires_at if deadline else None) if t is not None]
        slice_s = 0.05 if deadline is not None else None
        if ends:
            remaining = min(ends) - time.monotonic()
            slice_s = max(0.0, remaining if slice_s is None else min(slice_s, remaining))
        try:
            return future.result(timeout=slice_s)
        except FutureTimeout:
            pass
        if deadline is not None and (deadline.cancelled.is_set() or time.monotonic() >= deadline.expires_at):
            future.cancel()
            deadline.check()
        if limit is not None and time.monotonic() >= limit:
            future.cancel()
            raise Overloaded(f"no answer within {timeout:g} s", retry_after_s=5)
