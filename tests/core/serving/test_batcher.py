"""The dynamic batcher in front of a real engine: concurrent requests share a forward; errors reach their callers."""

import threading

from core.errors import UnknownVariant
from core.serving.batcher import DynamicBatcher


def test_the_batcher_scores_concurrent_requests_together_and_returns_errors_to_their_callers(engine):
    sizes = []
    batcher = DynamicBatcher(engine, max_batch=8, max_wait_ms=200, on_batch=lambda task, variant, n: sizes.append(n))
    answers, errors = [], []

    def ask(variant):
        try:
            answers.append(batcher.classify("creditmix", variant, f"Interest_Rate: {len(answers)}"))
        except UnknownVariant as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=("sft",)) for _ in range(6)] + [threading.Thread(target=ask, args=("dpo",))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert len(answers) == 6 and len(errors) == 1 and max(sizes) > 1
    assert all(variant.name == "sft" for variant, _ in answers)
