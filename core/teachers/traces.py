"""Teacher traces: asked once per input, appended to disk as they arrive, resumed after a crash.

A trace file is JSONL, one line per distinct input (the README lists the fields):
`id, input_sha256, prompt, output, label_probs, top_logprobs, teacher, latency_s, prompt_tokens,
completion_tokens` plus `error` on a failed answer (and `transient: true` when the transport failed
it: timeouts, 429s, 5xx after every retry). Every line is flushed and fsynced as soon as its answer
arrives, so killing the run loses at most the answers in flight; a rerun reads the file, skips every
input whose hash is already there and asks only for the rest. Answers that failed for their content
(unparsable, outside the label set, invalid JSON) are never asked again: a rerun does not pay twice
for the same refusal. Answers that failed in transit are asked again, and the newer line wins. A
torn last line from a crash is ignored and asked again.

    store = TraceStore("runs/.work/creditmix/traces/deliberate.jsonl")
    summary = generate_traces(rows, store, lambda: make_teacher(cfg, pool), prices=cfg.teacher.prices)   # core.kinds
    usable = store.usable()
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from core.common.config import Price
from core.common.files import fsync_folder
from core.common.rows import Example, text_sha256
from core.evaluation.cost import cost_usd, price_for
from core.teachers.base import Teacher, TeacherAnswer
from core.teachers.fanout import answer_on

if TYPE_CHECKING:
    from core.common.cluster import WorkerPool


class TraceStore:
    """Append-only JSONL of traces keyed by input hash."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.traces: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    trace = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash: that input is asked again
                self.traces[trace["input_sha256"]] = trace
        created = not self.path.exists()
        self._file = open(self.path, "a", encoding="utf-8")
        if created:
            fsync_folder(self.path.parent, files=False)  # the new file's name is on disk before its first trace
        if self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
            self._file.write("\n")  # end the torn line so the next trace starts on its own

    @classmethod
    def read(cls, path: str | Path) -> "TraceStore":
        """The traces in `path`, for reading only (the file is not kept open)."""
        store = cls(path)
        store.close()
        return store

    def __contains__(self, key: str) -> bool:
        """Answered for good: a trace that failed in transit does not count (it is asked again)."""
        trace = self.traces.get(key)
        return trace is not None and not trace.get("transient")

    def append(self, trace: dict) -> None:
        self.extend([trace])

    def extend(self, traces: list[dict]) -> None:
        """Write `traces` and sync them to disk together (one fsync for a shard that came back at once)."""
        with self._lock:
            self._file.write("".join(json.dumps(trace, ensure_ascii=False) + "\n" for trace in traces))
            self._file.flush()
            os.fsync(self._file.fileno())
            for trace in traces:
                self.traces[trace["input_sha256"]] = trace

    def usable(self) -> list[dict]:
        return [t for t in self.traces.values() if not t.get("error")]

    def close(self) -> None:
        self._file.close()


def _trace(row: Example, key: str, answer: TeacherAnswer, teacher: str) -> dict:
    trace = {
        "id": row.id,
        "input_sha256": key,
        "prompt": row.text,
        "output": answer.output,
        "label_probs": answer.label_probs,
        "top_logprobs": answer.top_logprobs,
        "teacher": teacher,
        "latency_s": round(answer.latency_s, 4),
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
    }
    trace |= answer.extra  # what the task kind records beside the answer (codegen: every candidate and its verdict)
    if answer.error:
        trace["error"] = answer.error
        if answer.transient:
            trace["transient"] = True
    return trace


def generate_traces(
    rows: list[Example],
    store: TraceStore,
    load_teacher: Callable[[], Teacher],
    prices: dict[str, Price] | None = None,
    progress: bool = True,
    check: Callable[[list[Example], list[TeacherAnswer]], list[TeacherAnswer]] | None = None,
    cluster: WorkerPool | None = None,
) -> dict:
    """Ask the teacher about every distinct input of `rows` not yet in `store`; return totals over `rows`.

    `load_teacher` is called only when something is left to ask: a fully cached rerun loads nothing.
    `check(rows, answers)`: the task kind's check of answers before they are stored (`TeacherTask.check`).
    `cluster`: the inputs are answered by a Ray or Dask cluster's workers (each loads its own teacher), written here.
    """
    check = check or (lambda _rows, answers: answers)
    todo: dict[str, Example] = {}
    duplicates = 0
    for row in rows:
        key = text_sha256(row.text)
        if key in todo:
            duplicates += 1
        elif key not in store:
            todo[key] = row
    cached = len({text_sha256(r.text) for r in rows}) - len(todo)
    teacher = load_teacher() if todo and cluster is None else None
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="teacher", unit="trace", disable=not progress or not todo, file=sys.stderr)
    items = list(todo.items())
    fanned_name = ""
    if cluster is not None and items:

        def write(answered: list[tuple[str, Example, TeacherAnswer]], name: str) -> None:
            store.extend([_trace(row, key, answer, name) for key, row, answer in answered])
            bar.update(len(answered))

        fanned_name = answer_on(cluster, items, load_teacher, check, write)
    elif teacher is not None and teacher.concurrency > 1:
        # Each worker writes its own answer before it asks the next input, so a crash loses at most the
        # `concurrency` inputs held by workers (none waits, answered but unwritten, behind a slow fsync).
        def ask_and_store(key: str, row: Example) -> None:
            answer = check([row], [teacher.answer_one(row.text)])[0]
            store.append(_trace(row, key, answer, teacher.name))

        pool = ThreadPoolExecutor(max_workers=teacher.concurrency)
        try:
            for future in as_completed([pool.submit(ask_and_store, key, row) for key, row in items]):
                future.result()
                bar.update(1)
        except BaseException:  # an interrupt or a cancelled run: the calls not yet sent are dropped, not paid for
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    elif teacher is not None:
        for begin in range(0, len(items), teacher.batch_size):
            chunk = items[begin : begin + teacher.batch_size]
            answers = check([row for _, row in chunk], teacher.answer([row.text for _, row in chunk]))
            for (key, row), answer in zip(chunk, answers):
                store.append(_trace(row, key, answer, teacher.name))
                bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - start
    wanted = {text_sha256(r.text) for r in rows}
    traces = [store.traces[k] for k in wanted]
    failed = [t for t in traces if t.get("error")]
    transient = sum(bool(t.get("transient")) for t in failed)
    name = teacher.name if teacher is not None else fanned_name or (traces[0]["teacher"] if traces else "")
    price = price_for(name, prices)
    prompt_tokens = sum(t["prompt_tokens"] for t in traces)
    completion_tokens = sum(t["completion_tokens"] for t in traces)
    reasons: dict[str, int] = {}
    for t in failed:
        reason = t["error"].split(":")[0]
        reasons[reason] = reasons.get(reason, 0) + 1
    return {
        "teacher": name,
        "traces": len(traces),
        "asked": len(todo),
        "cached": cached,
        "duplicates_skipped": duplicates,
        "failed": len(failed),
        "failed_in_transit": transient,
        "failure_reasons": reasons,
        "usable": len(traces) - len(failed),
        "elapsed_s": round(elapsed, 2),
        "traces_per_s": round(len(todo) / elapsed, 3) if elapsed > 0 and todo else None,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "latency_s_mean": round(sum(t["latency_s"] for t in traces) / max(len(traces), 1), 4),
        "cost_usd": round(cost_usd(prompt_tokens, completion_tokens, price), 6),
        "path": str(store.path),
    }
