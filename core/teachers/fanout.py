"""The teacher's pool answered by workers of a Ray cluster, written by this process into the one trace cache.

`generate_traces` (`core.teachers.traces`) decides what is left to ask (the cache's resume rule: an input already
answered is never asked again) and writes every answer; with a `RayFanout` it hands the inputs to `scale.teacher_workers`
Ray actors in shards of `scale.shard_size`. Each actor loads its own teacher once (an HTTP client for an endpoint, a
model for the local backends, on a GPU when `scale.worker_gpus` asks for one) and answers a shard with the teacher's own
concurrency; the shard's answers come back to this process, which appends them to the cache as each shard returns. Only
this process writes: the cache stays one file, its lines whole, no input twice. A worker that dies loses the shards it
held (Ray restarts the actor and sends them again: only those inputs are asked twice); a crash of this process loses
the shards in flight, and a rerun asks only for what the cache does not hold.

    fanout = RayFanout(cfg.scale)                     # connects, or fails naming scale.address
    generate_traces(rows, store, load_teacher, fanout=fanout)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from core.common.config import ScaleConfig
from core.common.ports import check_reachable
from core.common.rows import Example
from core.errors import ConfigError
from core.teachers.base import Teacher, TeacherAnswer

Shard = list[tuple[str, Example]]  # (input hash, row)
Check = Callable[[list[Example], list[TeacherAnswer]], list[TeacherAnswer]]


class _TeacherWorker:
    """One Ray actor: a teacher loaded once, answering shard after shard."""

    def __init__(self, load_teacher: Callable[[], Teacher], check: Check) -> None:
        self.teacher, self.check = load_teacher(), check

    def answer(self, shard: Shard) -> tuple[str, list[tuple[str, TeacherAnswer]]]:
        rows, teacher = [row for _, row in shard], self.teacher
        if teacher.concurrency > 1:
            with ThreadPoolExecutor(max_workers=teacher.concurrency) as pool:
                answers = list(pool.map(lambda row: teacher.answer_one(row.text), rows))
        else:
            answers = []
            for begin in range(0, len(rows), teacher.batch_size):
                answers += teacher.answer([row.text for row in rows[begin : begin + teacher.batch_size]])
        answers = self.check(rows, answers)
        return teacher.name, [(key, answer) for (key, _), answer in zip(shard, answers)]


class RayFanout:
    """Connected to the cluster of `scale.address` (a local one when None) on construction."""

    def __init__(self, scale: ScaleConfig) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("scale.runner: ray needs Ray installed: pip install 'distill-slm[scale]'") from None

        self.scale, self.ray = scale, ray
        if scale.address not in (None, "auto") and not scale.address.startswith("ray://"):
            check_reachable(scale.address, "scale.address")
        try:
            ray.init(address=scale.address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"scale.address: the Ray cluster at {scale.address!r} did not answer: {exc}") from None

    def run(
        self, items: Shard, load_teacher: Callable[[], Teacher], check: Check, write: Callable[[str, Example, TeacherAnswer, str], None]
    ):
        """Answer every (hash, row) of `items`; `write(key, row, answer, teacher_name)` is called here, in this process,
        for each answer as its shard returns. Returns the teacher's name."""
        ray, s = self.ray, self.scale
        actor = ray.remote(num_cpus=s.worker_cpus, num_gpus=s.worker_gpus, max_restarts=1, max_task_retries=1)(_TeacherWorker)
        shards = deque(items[begin : begin + s.shard_size] for begin in range(0, len(items), s.shard_size))
        workers = [actor.remote(load_teacher, check) for _ in range(min(s.teacher_workers, len(shards)))]
        rows = dict(items)
        pending: dict = {}
        for worker in workers * 2:  # two shards per worker: the next is queued while one is answered
            if shards:
                pending[worker.answer.remote(shards.popleft())] = worker
        name = ""
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
                if not ready:
                    continue
                [done] = ready
                worker = pending.pop(done)
                name, answers = ray.get(done)
                for key, answer in answers:
                    write(key, rows[key], answer, name)
                if shards:
                    pending[worker.answer.remote(shards.popleft())] = worker
        finally:
            for worker in workers:
                ray.kill(worker)
        return name
