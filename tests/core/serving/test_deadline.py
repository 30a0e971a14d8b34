"""A request's deadline and cancellation as the queues see them: work whose caller has gone or whose time has passed
is dropped before it runs, and the waiter is told at once (no polling)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from core.errors import Overloaded
from core.serving.deadline import Deadline, current, wait


def test_a_result_in_time_is_returned_and_the_deadline_is_the_requests_own():
    future: Future = Future()
    threading.Timer(0.05, future.set_result, ("answer",)).start()
    with Deadline(5) as deadline:
        assert current() is deadline
        assert wait(future) == "answer"
    assert current() is None  # the next request on this thread does not inherit it


def test_past_the_deadline_queued_work_is_dropped_and_the_caller_told():
    future: Future = Future()  # never picked up: a queue that is not moving
    start = time.monotonic()
    with Deadline(0.2), pytest.raises(Overloaded, match="request deadline of 0.2 s"):
        wait(future, timeout=30)
    assert time.monotonic() - start < 2 and future.cancelled()  # the lane's worker will skip it


def test_a_caller_that_goes_away_wakes_its_waiter_and_cancels_its_queued_work():
    future: Future = Future()
    with Deadline(30) as deadline:
        threading.Timer(0.1, deadline.cancel).start()
        start = time.monotonic()
        with pytest.raises(Overloaded, match="caller went away"):
            wait(future)
    assert time.monotonic() - start < 2 and future.cancelled()
    later: Future = Future()
    deadline.watch(later)  # work queued after the cancel is cancelled as it is watched
    assert later.cancelled()


def test_work_already_running_is_not_cancelled_and_its_result_still_counts():
    future: Future = Future()
    assert future.set_running_or_notify_cancel()  # a worker has taken it
    threading.Timer(0.3, future.set_result, ("late",)).start()
    with pytest.raises(Overloaded, match="no answer within 0.1 s"):
        wait(future, timeout=0.1)  # without a request deadline, the lane's own timeout applies
    assert not future.cancelled()
