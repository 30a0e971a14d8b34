"""A small dynamic batcher in front of the engine: requests for the same task and variant that
arrive within `max_wait_ms` of each other are scored in one forward. An input longer than
`chunk_tokens` is not batched: its prefill runs in steps, each queued on the engine's model thread,
and the batches of short requests run between the steps (`InferenceEngine.classify_in_chunks`).

    batcher = DynamicBatcher(engine, max_batch=16, max_wait_ms=5)
    variant, prediction = batcher.classify("creditmix", "sft", text)   # blocks until answered
    batcher.close()
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future

from core.model.calibrated import Prediction
from core.serving.engine import InferenceEngine, Variant

_CLOSE = object()


class DynamicBatcher:
    def __init__(
        self,
        engine: InferenceEngine,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[str, str, int], None] | None = None,
        chunk_tokens: int | None = None,
    ) -> None:
        self.engine = engine
        self.chunk_tokens = chunk_tokens
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="distill-slm-batcher", daemon=True)
        self._worker.start()

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
        future: Future = Future()
        self._queue.put((task, variant, text, future))
        return future.result(timeout=timeout)

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

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _CLOSE:
                return
            groups: dict[tuple[str, str], list] = defaultdict(list)
            for task, variant, text, future in self._collect(first):
                groups[(task, variant)].append((text, future))
            for (task, variant), items in groups.items():
                try:
                    served, preds = self.engine.classify(task, variant, [text for text, _ in items])
                except Exception as exc:  # the callers get the error; the worker keeps serving
                    for _, future in items:
                        future.set_exception(exc)
                    continue
                if self.on_batch:
                    self.on_batch(task, variant, len(items))
                for (_, future), pred in zip(items, preds):
                    future.set_result((served, pred))
