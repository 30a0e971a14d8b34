"""Worker pools on the clusters teams already run: Ray actors or Dask workers (`scale.runner: ray | dask`).

What the project sends to a cluster has one shape: workers that each load something heavy once (a teacher, a base
model) and then answer call after call (a shard of the pool, a shard of the eval rows), the answers coming back to
this process as each call finishes, which writes them. `connect(scale)` gives the pool for the configured engine;
`pool.stream(...)` runs the calls and yields `(key, answer)` as they come back.

* Ray: each worker is an actor (`scale.worker_cpus` / `worker_gpus` reserved), restarted once if its process dies,
  its call sent again; the actors are killed when the stream ends.
* Dask: each call is a task (`retries=1`; a dead worker's tasks go to another); the worker's loaded object lives in
  that worker process, keyed by the stream, built on its first call there and dropped when the stream ends.
  `scale.worker_gpus` becomes the Dask resource `GPU` (start GPU workers with `--resources GPU=1`); Dask reserves no
  CPUs, so at most `workers x in_flight` calls are out at once instead, and a worker computes on `scale.worker_cpus`
  threads (torch's; Dask's nanny would leave it one).

    pool = connect(cfg.scale)                      # connects now, or fails naming scale.address
    for key, answer in pool.stream(Worker, (config,), "answer", [(k, (shard,)) for k, shard in shards], workers=2):
        write(key, answer)
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from core.common.config import ScaleConfig
from core.common.ports import check_reachable
from core.errors import ConfigError

Call = tuple[Any, tuple]  # (key the answer comes back under, the method's arguments)


class WorkerPool(Protocol):
    scale: ScaleConfig

    def stream(
        self, worker: Callable[..., Any], init: tuple, method: str, calls: Iterable[Call], workers: int, in_flight: int = 1
    ) -> Iterator[tuple[Any, Any]]:
        """`worker(*init)` built once per worker; `getattr(it, method)(*args)` for each call, `in_flight` calls queued per
        worker; `(key, answer)` yielded as each call finishes (in no particular order)."""
        ...

    def close(self) -> None:
        """Let go of what this pool started (a local cluster); a cluster at `scale.address` keeps running."""
        ...


def check_address(runner: str, address: str | None, setting: str) -> None:
    """Refuse, naming `setting`, an address of `runner`'s cluster that nothing answers at (before any work starts) or,
    for Dask, one without its scheme. None (a local cluster) and Ray's `auto` / `ray://` client addresses pass as they are."""
    if address is None or (runner == "ray" and (address == "auto" or address.startswith("ray://"))):
        return
    if runner == "dask":
        if "://" not in address:
            raise ConfigError(f"{setting}: a Dask scheduler is addressed as tcp://HOST:PORT, not {address!r}")
        address = address.split("://", 1)[1]
    check_reachable(address, setting)


def connect(scale: ScaleConfig, local_workers: int | None = None) -> WorkerPool:
    """The pool of `scale.runner` (ray or dask) at `scale.address` (None: a local cluster it starts; for Dask, of
    `local_workers` worker processes, default `scale.teacher_workers`: the evaluation asks for `scale.eval_workers`)."""
    if scale.runner == "ray":
        return RayPool(scale)
    if scale.runner == "dask":
        return DaskPool(scale, local_workers)
    raise ConfigError(f"scale.runner: {scale.runner!r} has no workers to send work to (ray or dask)")


class RayPool:
    """Connected to the Ray cluster of `scale.address` on construction."""

    def __init__(self, scale: ScaleConfig) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("scale.runner: ray needs Ray installed: pip install 'distill-slm[scale]'") from None
        self.scale, self.ray = scale, ray
        check_address("ray", scale.address, "scale.address")
        try:
            ray.init(address=scale.address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"scale.address: the Ray cluster at {scale.address!r} did not answer: {exc}") from None

    def close(self) -> None:
        """Nothing: Ray's connection is the process's, shared with whatever else runs on Ray here (prefect-ray's task
        runner, a task on a Ray worker); a local instance stops with the process (`ray.shutdown()` stops it sooner)."""

    def stream(self, worker, init, method, calls, workers, in_flight=1):
        ray, s = self.ray, self.scale
        queue = deque(calls)
        actor = ray.remote(num_cpus=s.worker_cpus, num_gpus=s.worker_gpus, max_restarts=1, max_task_retries=1)(worker)
        actors = [actor.remote(*init) for _ in range(min(workers, len(queue)))]
        pending: dict = {}

        def submit(handle) -> None:
            key, args = queue.popleft()
            pending[getattr(handle, method).remote(*args)] = (handle, key)

        try:
            for handle in actors * in_flight:
                if queue:
                    submit(handle)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
                if not ready:
                    continue
                [done] = ready
                handle, key = pending.pop(done)
                answer = ray.get(done)
                if queue:
                    submit(handle)
                yield key, answer
        finally:
            for handle in actors:
                ray.kill(handle)


# Objects the Dask calls of a stream built in this worker process, by stream: built on the stream's first call here.
_LOADED: dict[str, Any] = {}
_LOADING = threading.Lock()


def _dask_call(stream_id: str, threads: int, worker: Callable[..., Any], init: tuple, method: str, args: tuple) -> Any:
    with _LOADING:  # a worker with several threads builds its object once
        if stream_id not in _LOADED:
            _heap_keeps_large_blocks()
            _LOADED[stream_id] = worker(*init)
            # Dask's nanny starts workers with OMP_NUM_THREADS=1: a model worker given more CPUs would compute on one.
            # Only a worker that loaded a model has torch; one asking an endpoint never imports it (`core.teachers.asking`).
            if "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(threads)
        loaded = _LOADED[stream_id]
    return getattr(loaded, method)(*args)


def _heap_keeps_large_blocks() -> None:
    """Undo what the nanny's MALLOC_TRIM_THRESHOLD_ (64 KiB) does to a model's worker: with that variable set, glibc
    also pins its mmap threshold at 128 KiB, so every activation tensor is mapped and unmapped at each use. Measured
    here: 5 forwards of the embedded model (16 x 120 tokens) 26.7 s with it, 18.2 s without, 18.1 s with this."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: the variable means nothing there
        return
    libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: blocks under 64 MiB come from the heap and are reused
    libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: free heap is returned to the system above 256 MiB


def _dask_forget(stream_id: str) -> None:
    _LOADED.pop(stream_id, None)


class DaskPool:
    """A client of the Dask scheduler at `scale.address` (`tcp://host:8786`; None: a local cluster of `local_workers`
    worker processes it starts, default `scale.teacher_workers`), connected on construction."""

    def __init__(self, scale: ScaleConfig, local_workers: int | None = None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError("scale.runner: dask needs Dask installed: pip install 'distill-slm[scale]'") from None
        self.scale = scale
        self.local = None
        if scale.address is None:
            workers = local_workers or scale.teacher_workers
            self.local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
            self.client = Client(self.local)
            return
        check_address("dask", scale.address, "scale.address")
        try:
            self.client = Client(scale.address, timeout="10s")
        except OSError as exc:
            raise ConfigError(f"scale.address: the Dask scheduler at {scale.address!r} did not answer: {exc}") from None

    def close(self) -> None:
        """Disconnect (and stop the local cluster this pool started, if any)."""
        self.client.close()
        if self.local is not None:
            self.local.close()

    def stream(self, worker, init, method, calls, workers, in_flight=1):
        from distributed import as_completed

        queue, stream_id = deque(calls), uuid.uuid4().hex
        threads = max(1, round(self.scale.worker_cpus))
        resources = {"GPU": self.scale.worker_gpus} if self.scale.worker_gpus else None
        outstanding: dict = {}  # future -> the key its answer comes back under

        def submit() -> Any:
            key, args = queue.popleft()
            future = self.client.submit(
                _dask_call, stream_id, threads, worker, init, method, args, pure=False, retries=1, resources=resources
            )
            outstanding[future] = key
            return future

        running = as_completed([submit() for _ in range(min(len(queue), workers * in_flight))])
        try:
            for future in running:
                answer = future.result()
                if queue:
                    running.add(submit())
                yield outstanding.pop(future), answer
        finally:
            for future in outstanding:
                future.cancel()
            self.client.run(_dask_forget, stream_id)
