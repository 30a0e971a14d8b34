"""The teacher's pool answered by workers of a Ray or Dask cluster, written by this process into the one trace cache.

`generate_traces` (`core.teachers.traces`) decides what is left to ask (the cache's resume rule: an input already
answered is never asked again) and writes every answer; with a cluster (`core.common.cluster`) it hands the inputs to
`scale.teacher_workers` workers in shards of `scale.shard_size`. Each worker loads its own teacher once (an HTTP client for an endpoint, a
model for the local backends, on a GPU when `scale.worker_gpus` asks for one) and answers a shard with the teacher's own
concurrency; the shard's answers come back to this process, which appends them to the cache as each shard returns. Only
this process writes: the cache stays one file, its lines whole, no input twice. A worker that dies loses the shards it
held (Ray restarts the actor, Dask moves the task to another worker, and the shard is sent again: only those inputs
are asked twice); a crash of this process loses the shards in flight, and a rerun asks only for what the cache does
not hold.

An endpoint teacher reaches a worker as `core.kinds.teacher_loader` builds it: the `openai` backend and the kind's
endpoint half (`core.teachers.asking`), neither of which imports model code, so a worker is ready in ~0.4 s.

    cluster = connect(cfg.scale)                      # connects, or fails naming scale.address
    load = teacher_loader(cfg, settings)              # picklable; each worker calls it once
    generate_traces(rows, store, load, check=for_config(cfg, settings).teacher_task().endpoint().check, cluster=cluster)
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from core.common.cluster import WorkerPool
from core.common.rows import Example
from core.teachers.base import Teacher, TeacherAnswer

Shard = list[tuple[str, Example]]  # (input hash, row)
Check = Callable[[list[Example], list[TeacherAnswer]], list[TeacherAnswer]]


class _TeacherWorker:
    """One worker: a teacher loaded once, answering shard after shard."""

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


def answer_on(
    cluster: WorkerPool,
    items: Shard,
    load_teacher: Callable[[], Teacher],
    check: Check,
    write: Callable[[list[tuple[str, Example, TeacherAnswer]], str], None],
) -> str:
    """Answer every (hash, row) of `items` on the cluster's workers; `write([(key, row, answer), ...], teacher_name)` is
    called here, in this process, with each shard's answers as it returns. Returns the teacher's name."""
    size, rows = cluster.scale.shard_size, dict(items)
    shards = [(begin, (items[begin : begin + size],)) for begin in range(0, len(items), size)]
    name = ""
    # two shards per worker: the next is queued while one is answered
    for _, (name, answers) in cluster.stream(
        _TeacherWorker, (load_teacher, check), "answer", shards, cluster.scale.teacher_workers, in_flight=2
    ):
        write([(key, rows[key], answer) for key, answer in answers], name)
    return name
