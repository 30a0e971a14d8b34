"""The two timings the benchmarks share: a call's wall seconds beside its result, and one-request-at-a-time latency.

adapter, seconds = timed(lambda: train(...))
p50 = p50_ms(decoder.predict, texts)        # each text alone: what a caller without a batcher sees
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def timed(fn: Callable):
    """`fn()`'s result and its wall seconds (rounded to 0.1)."""
    start = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - start, 1)


def p50_ms(answer: Callable[[list[str]], object], texts: list[str]) -> float:
    """Median milliseconds of `answer([text])`, one text at a time (no batching)."""
    times = []
    for text in texts:
        start = time.perf_counter()
        answer([text])
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50))
