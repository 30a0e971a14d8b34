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
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout

from core.errors import Overloaded

_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("request_deadline", default=None)


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self.cancelled = threading.Event()
        self._watched: list[Future] = []
        self._lock = threading.Lock()
        self._token: contextvars.Token | None = None

    def __enter__(self) -> Deadline:
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _current.reset(self._token)

    def cancel(self) -> None:
        """The caller has gone: drop whatever of its work is still queued (a future not yet started is cancelled,
        which also wakes the thread waiting on it)."""
        self.cancelled.set()
        with self._lock:
            for future in self._watched:
                future.cancel()

    def watch(self, future: Future) -> None:
        with self._lock:
            self._watched.append(future)
        if self.cancelled.is_set():
            future.cancel()

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
    or once the caller has gone, the future is cancelled (dropped if it has not started) and Overloaded raised.
    No polling: a cancel wakes the waiter through the future itself."""
    deadline = current()
    ends = [t for t in (None if timeout is None else time.monotonic() + timeout, deadline.expires_at if deadline else None) if t]
    if deadline is not None:
        deadline.watch(future)
    try:
        return future.result(timeout=max(0.0, min(ends) - time.monotonic()) if ends else None)
    except (FutureTimeout, CancelledError):
        future.cancel()
        if deadline is not None:
            deadline.check()
        if future.cancelled() or not future.done():
            raise Overloaded(f"no answer within {timeout:g} s" if timeout else "the request was cancelled", retry_after_s=5) from None
        return future.result()
