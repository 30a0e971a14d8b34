"""Worker pools on a real Dask cluster (the session's `dask scheduler` and two `dask worker` processes): each worker
builds its object once, every call is answered once, a worker killed with SIGKILL mid-stream loses nothing, and the
workers forget the stream when it ends. (Ray's pool runs the same calls in tests/core/teachers/test_fanout.py and
tests/core/evaluation/test_sharded.py, parametrised over both engines.)"""

from __future__ import annotations

import os
import signal

import pytest

from core.common.cluster import DaskPool, connect
from core.common.config import ScaleConfig
from core.errors import ConfigError


def _counting_worker():
    class Counting:  # defined here: pickled by value, so the worker processes need not import the tests
        def __init__(self, delay_s: float) -> None:
            self.delay_s = delay_s

        def answer(self, n: int) -> tuple[int, int, int]:
            import time

            time.sleep(self.delay_s)
            return n * n, os.getpid(), id(self)

    return Counting


def test_each_worker_builds_once_every_call_is_answered_once_and_the_stream_is_forgotten(dask_cluster):
    pool = connect(ScaleConfig(runner="dask", address=dask_cluster))
    assert isinstance(pool, DaskPool)
    answers = list(pool.stream(_counting_worker(), (0.05,), "answer", [(f"k{n}", (n,)) for n in range(12)], workers=2, in_flight=2))
    assert sorted(key for key, _ in answers) == sorted(f"k{n}" for n in range(12))
    assert {key: answer[0] for key, answer in answers} == {f"k{n}": n * n for n in range(12)}
    objects_by_pid: dict[int, set[int]] = {}
    for _, (_, pid, obj) in answers:
        objects_by_pid.setdefault(pid, set()).add(obj)
    assert all(len(objects) == 1 for objects in objects_by_pid.values())  # one object per worker process for the stream
    assert os.getpid() not in objects_by_pid  # answered in the worker processes
    from core.common import cluster

    left = pool.client.run(lambda: len(cluster._LOADED))
    assert set(left.values()) == {0}  # the workers dropped what the stream loaded
    pool.close()


def test_a_worker_killed_mid_stream_loses_no_call(dask_cluster):
    pool = connect(ScaleConfig(runner="dask", address=dask_cluster))
    pids = pool.client.run(os.getpid)
    calls = [(f"k{n}", (n,)) for n in range(16)]
    seen: list[str] = []
    killed = None
    for key, (_, pid, _) in pool.stream(_counting_worker(), (0.3,), "answer", calls, workers=2, in_flight=1):
        seen.append(key)
        if killed is None:  # the other worker holds a call now: kill it with a real signal
            killed = next(p for p in pids.values() if p != pid)
            os.kill(killed, signal.SIGKILL)
    assert sorted(seen) == sorted(key for key, _ in calls) and len(seen) == len(set(seen))
    pool.client.wait_for_workers(2, timeout=120)  # the nanny restarted the killed one (for the tests after this one)
    assert killed not in pool.client.run(os.getpid).values()
    pool.close()


@pytest.mark.parametrize(
    "address, message",
    [
        ("tcp://127.0.0.1:1", r"scale.address: nothing answers at '127.0.0.1:1'"),
        ("127.0.0.1:8786", r"scale.address: a Dask scheduler is addressed as tcp://HOST:PORT, not '127.0.0.1:8786'"),
    ],
)
def test_a_dask_address_that_cannot_answer_is_refused_before_any_work(address, message):
    with pytest.raises(ConfigError, match=message):
        connect(ScaleConfig(runner="dask", address=address))


def test_local_has_no_workers_to_send_to():
    with pytest.raises(ConfigError, match="scale.runner: 'local' has no workers"):
        connect(ScaleConfig())


def test_a_local_dask_cluster_has_the_workers_its_caller_asks_for():
    """Without `scale.address` the pool starts its own cluster: `scale.teacher_workers` processes for the teacher's pool,
    the count the caller names otherwise (the sharded evaluation: `scale.eval_workers`)."""
    scale = ScaleConfig(runner="dask", teacher_workers=2, eval_workers=1)
    pool = connect(scale, scale.eval_workers)
    try:
        assert len(pool.client.scheduler_info()["workers"]) == 1
    finally:
        pool.close()
