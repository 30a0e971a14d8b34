"""Dynamic batching in front of the engine, one lane per kind of work.

Classification: requests for the same task and variant that arrive within `max_wait_ms` of each
other are scored in one forward. An input longer than `chunk_tokens` is not batched: its prefill
runs in steps, each queued on the engine's model thread, and the batches of short requests run
between the steps (`InferenceEngine.classify_in_chunks`).

Extraction: requests for the same task, variant, schema and token budget that arrive within
`extract_wait_ms` of each other decode together, one row each, every row under its own grammar
state (static batching: a batch runs until its last row ends). A batched decode step costs little
more than a one-row step on a CPU (the weights are read once for all rows; the service runs them on
bf16 copies, `core.model.fast_decode`), so concurrent clients share the model instead of queueing for
it. A batch that fails is retried row by row, so a row that cannot be answered fails alone.
Each lane has its own worker: a decode of several seconds never holds classification's queue. Each lane's queue is
bounded (`max_queue`): past it a request is refused at once (`Overloaded`, a 503); a request whose deadline passes or
whose caller goes away while it waits is dropped before it runs (`core.serving.deadline`).

    batcher = DynamicBatcher(engine, max_batch=16, max_wait_ms=5)
    variant, prediction = batcher.classify("creditmix", "sft", text)        # blocks until answered
    variant, extraction = batcher.extract("invoices", "production", document)
    batcher.close()
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future

from core.errors import Overloaded
from core.model.calibrated import Prediction
from core.model.continuous import Row, RunningBatch, shared_prefix, supported
from core.model.schema import Extraction, TaskSchema
from core.serving.deadline import wait
from core.serving.engine import InferenceEngine, Variant
from core.serving.streaming import TokenStream, feeder

_CLOSE = object()


class _Lane:
    """A queue and its worker: items that arrive within `max_wait_s` of the first are grouped by key, each group run
    as one call of `run(key, items) -> results` (one per item)."""

    def __init__(
        self, name: str, run: Callable[[tuple, list], list], max_batch: int, max_wait_s: float, on_batch, max_queue: int = 64
    ) -> None:
        self.name, self.run, self.max_batch, self.max_wait_s, self.on_batch = name, run, max_batch, max_wait_s, on_batch
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._worker = threading.Thread(target=self._serve, name=name, daemon=True)
        self._worker.start()

    def submit(self, key: tuple, item, timeout: float):
        """Queue `item` and wait for its result: Overloaded at once when the queue is full, and when the request's
        deadline passes or its caller goes away while it waits (the item is then dropped unrun)."""
        future: Future = Future()
        try:
            self._queue.put_nowait((key, item, future))
        except queue.Full:
            raise Overloaded(f"the {self.name} queue is full ({self._queue.maxsize} waiting: max_queue)") from None
        return wait(future, timeout)

    def close(self) -> None:
        self._queue.put(_CLOSE)
        self._worker.join(timeout=30)

    def _collect(self, first) -> list:
        batch, deadline = [first], time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if item is _CLOSE:
                self._queue.put(_CLOSE)  # finish this batch, then stop
                break
            batch.append(item)
        return batch

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is _CLOSE:
                return
            groups: dict[tuple, list] = defaultdict(list)
            for key, item, future in self._collect(first):
                if future.set_running_or_notify_cancel():  # False: its caller has gone or its deadline passed
                    groups[key].append((item, future))
            for key, members in groups.items():
                try:
                    results = self.run(key, [item for item, _ in members])
                except Exception as exc:  # the callers get the error; the worker keeps serving
                    for _, future in members:
                        future.set_exception(exc)
                    continue
                if self.on_batch:
                    self.on_batch(key[0], key[1], len(members))
                for (_, future), result in zip(members, results):
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)


class _Recent:
    """A dict that keeps its `capacity` most recently used entries."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self._items = capacity, OrderedDict()

    def get(self, key):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key, value):
        self._items[key] = value
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return value


class _ContinuousLane:
    """Extraction on a running batch (`core.model.continuous`): a request joins between decode steps and leaves as soon
    as its answer ends, each row under its own grammar, budget and stream. Rows share a batch when they ask the same
    task and variant (one adapter per forward); a request for another waits until the running batch drains, and the
    batch takes no new rows meanwhile, nor while a reload waits (the batch holds the served versions,
    `InferenceEngine.versions_held`). Each step runs as one job on the model thread, so classification is answered
    between steps."""

    def __init__(self, engine: InferenceEngine, max_rows: int, on_batch, max_queue: int = 64) -> None:
        self.engine, self.max_rows, self.on_batch = engine, max_rows, on_batch
        self.name = "extraction"
        # Bounded: requests may bring schemas of their own, each with its prefix. The caches are keyed by the served
        # version (task, ref, adapter), so a version that was swapped out is never read again and ages out.
        self._prefixes = _Recent(64)  # (task, ref, schema) -> the tokens its prompts begin with
        self._caches = _Recent(8)  # (task, ref, adapter, prefix tokens) -> that prefix's key/value cache
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._worker = threading.Thread(target=self._serve, name="extraction-continuous", daemon=True)
        self._worker.start()

    submit = _Lane.submit

    def close(self) -> None:
        self._queue.put(_CLOSE)
        self._worker.join(timeout=30)

    def _serve(self) -> None:
        waiting: deque = deque()
        closing = False
        while not (closing and not waiting):
            if not waiting:
                item = self._queue.get()
                if item is _CLOSE:
                    return
                waiting.append(item)
            key = waiting[0][0][:2]  # (task, variant)
            try:
                variant = self.engine.get(*key)
            except Exception as exc:  # an unknown variant: its requests get the error
                for item in [w for w in waiting if w[0][:2] == key]:
                    waiting.remove(item)
                    if item[2].set_running_or_notify_cancel():
                        item[2].set_exception(exc)
                continue
            while self.engine.reload_pending.is_set():  # a reload waits for the versions: it goes first
                time.sleep(0.005)
            with self.engine.versions_held():
                closing = self._run_batch(key, variant, waiting) or closing

    def _run_batch(self, key: tuple, variant: Variant, waiting: deque) -> bool:
        """Decode rows of `key` until none is left, taking new ones between steps; True once close() was asked."""
        batch = RunningBatch(self.engine.model, self.engine.tokenizer.eos_token_id, self.engine.tokenizer.pad_token_id)
        closing = False
        while True:
            while True:  # whatever has arrived, without waiting
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _CLOSE:
                    closing = True
                else:
                    waiting.append(item)
            reload_waits = self.engine.reload_pending.is_set()
            if reload_waits and not len(batch):
                return closing  # let the reload have the versions before a new batch starts
            others_wait = any(w[0][:2] != key for w in waiting)
            if (not len(batch) or not (others_wait or reload_waits)) and len(batch) < self.max_rows:
                joining = [w for w in waiting if w[0][:2] == key][: self.max_rows - len(batch)]
                for item in joining:
                    waiting.remove(item)
                self._admit(batch, variant, joining)
            if not len(batch):
                return closing
            try:
                ended = self.engine.run_with(variant, batch.step)
            except Exception as exc:  # the rows decoding get the error; the lane keeps serving
                for row in batch.rows:
                    row.handle[0].set_exception(exc)
                return closing
            for row in ended:
                future, decoder, mask, started = row.handle
                latency_ms = (time.perf_counter() - started) * 1000
                future.set_result((variant, decoder.answer_of(row.tokens, row.prompt_tokens, latency_ms, row.budget, mask)))

    def _admit(self, batch: RunningBatch, variant: Variant, items: list) -> None:
        """Prefill the requests that may still run and merge them into the batch; a request that cannot run gets its error.
        Prompts that begin with their schema's shared prefix are prefilled from the document on (`_prefill`)."""
        tokenizer = self.engine.tokenizer
        groups: dict[tuple[int, ...], tuple[list, list]] = defaultdict(lambda: ([], []))  # prefix -> rows, rests of prompts
        for (task, name, _, max_tokens), (document, schema, stream), future in items:
            if not future.set_running_or_notify_cancel():  # its caller has gone or its deadline passed
                continue
            try:
                _, decoder = self.engine.extraction_decoder(task, name, schema)
                budget = decoder.budget(max_tokens)
                ids = tokenizer(decoder.prompt(document), add_special_tokens=False).input_ids
                decoder.check_fits(len(ids), budget)
                key = (task, variant.ref, decoder.schema.sha256)
                prefix = self._prefixes.get(key)
                if prefix is None:
                    prefix = self._prefixes.put(key, tuple(shared_prefix(tokenizer, decoder.prompt)))
            except Exception as exc:
                future.set_exception(exc)
                continue
            prefix = prefix if 0 < len(prefix) < len(ids) and tuple(ids[: len(prefix)]) == prefix else ()
            mask = decoder.row_mask(budget)
            rows, rests = groups[prefix]
            rows.append(Row((future, decoder, mask, time.perf_counter()), mask, budget, stream.feed if stream is not None else None))
            rests.append(ids[len(prefix) :])
        for prefix, (rows, rests) in groups.items():
            encoded = tokenizer.pad({"input_ids": rests}, return_tensors="pt", padding_side="left")
            try:
                self.engine.run_with(variant, self._prefill, batch, variant, prefix, dict(encoded), rows)
            except Exception as exc:
                for row in rows:
                    row.handle[0].set_exception(exc)
        if self.on_batch and groups:
            self.on_batch(variant.task, variant.name, len(batch))

    def _prefill(self, batch: RunningBatch, variant: Variant, prefix: tuple[int, ...], encoded: dict, rows: list[Row]) -> None:
        """On the model thread: the rows' prefill, from the cached prefix's end when they share one (computed here the
        first time under this version's adapter, then kept: a task's instruction is prefilled once, not per request)."""
        cached = None
        if prefix:
            key = (variant.task, variant.ref, variant.adapter, prefix)
            cached = self._caches.get(key) or self._caches.put(key, batch.prefill_prefix(list(prefix)))
        batch.add(encoded, rows, cached)


class DynamicBatcher:
    def __init__(
        self,
        engine: InferenceEngine,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[str, str, int], None] | None = None,
        chunk_tokens: int | None = None,
        extract_batch: int = 16,
        extract_wait_ms: float = 20.0,
        max_queue: int = 64,
        continuous_extraction: bool | None = None,
    ) -> None:
        self.engine = engine
        self.chunk_tokens = chunk_tokens
        self.on_batch = on_batch
        self._classify = _Lane("classification", self._run_classify, max_batch, max_wait_ms / 1000, on_batch, max_queue)
        if continuous_extraction is None:
            continuous_extraction = engine.model is not None and supported(engine.model)
        self._extract = (
            _ContinuousLane(engine, extract_batch, on_batch, max_queue)
            if continuous_extraction
            else _Lane("extraction", self._run_extract, extract_batch, extract_wait_ms / 1000, on_batch, max_queue)
        )

    def classify(self, task: str, variant: str, text: str, timeout: float = 300.0) -> tuple[Variant, Prediction]:
        # A token spans at least one character: only inputs longer than the chunk in characters need counting.
        if (
            self.chunk_tokens
            and len(text) > self.chunk_tokens
            and len(self.engine.tokenizer(text, add_special_tokens=False).input_ids) > self.chunk_tokens
        ):
            answer = self.engine.classify_in_chunks(task, variant, text, self.chunk_tokens)
            if self.on_batch:
                self.on_batch(task, variant, 1)
            return answer
        return self._classify.submit((task, variant), text, timeout)

    def extract(
        self,
        task: str,
        variant: str,
        document: str,
        schema: TaskSchema | None = None,
        max_new_tokens: int | None = None,
        timeout: float = 600.0,
        stream: TokenStream | None = None,
    ) -> tuple[Variant, Extraction]:
        """One document, decoded beside the others sent meanwhile under the same schema and budget; `stream` is fed its
        tokens as they are decoded.

        A request's own schema is compiled here, in the caller's thread and within the engine's compile budget, so a
        slow schema holds neither the batch nor the lane.
        """
        self.engine.prepare_schema(task, variant, schema)
        key = (task, variant, schema.sha256 if schema is not None else None, max_new_tokens)
        return self._extract.submit(key, (document, schema, stream), timeout)

    def close(self) -> None:
        self._classify.close()
        self._extract.close()

    def _run_classify(self, key: tuple, texts: list[str]) -> list:
        served, predictions = self.engine.classify(*key, texts)
        return [(served, p) for p in predictions]

    def _run_extract(self, key: tuple, items: list) -> list:
        task, variant, _, budget = key
        documents, schema, streams = [d for d, _, _ in items], items[0][1], [s for _, _, s in items]
        try:
            served, results = self.engine.extract(task, variant, documents, schema, budget, feeder(streams))
            return [(served, r) for r in results]
        except Exception as exc:
            if len(items) == 1:
                raise
            failure = exc
        answers = []  # row by row: the failing one fails alone (its caller gets its error), the others are answered
        for document, stream in zip(documents, streams):
            if stream is not None and stream.fed:  # its reader has text of the failed batch: a retry would repeat it
                answers.append(failure)
                continue
            try:
                served, [result] = self.engine.extract(task, variant, [document], schema, budget, feeder([stream]))
                answers.append((served, result))
            except Exception as exc:
                answers.append(exc)
        return answers
