"""The dynamic batcher in front of a real engine: concurrent requests share a forward; errors reach their callers."""

import statistics
import threading
import time

import pytest

from core.errors import UnknownVariant
from core.serving.batcher import DynamicBatcher
from core.settings import ModelSettings


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


def test_a_long_input_does_not_hold_short_ones_behind_its_prefill(embedded_dir, tmp_path):
    """On the embedded model a ~1,000-token prefill takes about a second; chunked, short requests go between steps."""
    import time

    import yaml

    from core.common.config import TaskConfig
    from core.registry import Registry
    from core.serving.engine import InferenceEngine
    from demos import creditmix
    from tests.conftest import make_adapter

    cfg = TaskConfig()
    registry = Registry(tmp_path / "runs")
    adapter = make_adapter(cfg, tmp_path / "adapter", seed=1)
    registry.register("creditmix", "sft", adapter, {"macro_f1": 0.5}, yaml.safe_dump(cfg.model_dump(mode="json")), {"eval_sha256": "x"})
    engine = InferenceEngine(str(registry.root), ModelSettings())
    engine.load()
    batcher = DynamicBatcher(engine, max_batch=8, max_wait_ms=1, chunk_tokens=128)
    long_text = " ".join(r["text"] for r in creditmix.generate(12, seed=4))
    assert len(engine.tokenizer(long_text).input_ids) > 800
    short = "Interest_Rate: 3; Num_Bank_Accounts: 2"
    batcher.classify("creditmix", "base", short)  # warm: the shared prefix is cached
    start = time.perf_counter()
    _, alone = batcher.classify("creditmix", "base", long_text)
    long_s = time.perf_counter() - start
    answers = {}
    sender = threading.Thread(target=lambda: answers.update(long=batcher.classify("creditmix", "base", long_text)[1]))
    sender.start()
    time.sleep(long_s / 5)
    waits = []
    while sender.is_alive():
        start = time.perf_counter()
        batcher.classify("creditmix", "base", short)
        waits.append(time.perf_counter() - start)
    sender.join()
    batcher.close()
    # Unchunked, the first short request waits for the rest of the prefill and the long one ends with it: one or two
    # answers. Chunked, short ones are answered between steps, several while the long one is still in flight; one of
    # them may land behind two steps on a busy machine (CI: 1.20 s of 3.53), so the typical wait is what is bounded.
    assert len(waits) >= 3, (waits, long_s)
    assert statistics.median(waits) < long_s / 3 and max(waits) < long_s / 2, (waits, long_s)
    assert answers["long"].label == alone.label and abs(answers["long"].confidence - alone.confidence) < 1e-4


@pytest.mark.parametrize("continuous", [False, True])
def test_extraction_requests_decode_together_and_a_row_that_fails_fails_alone(tiny_model_dir, tmp_path, continuous):
    """Static batching: requests sent together decode as one batch. Continuous: the first starts at once and the others
    join it between steps. Either way an input over the context fails alone."""
    import yaml

    from core.common.config import TaskConfig
    from core.errors import DocumentTooLong
    from core.registry import Registry
    from core.serving.engine import InferenceEngine
    from demos import invoices
    from tests.conftest import make_adapter

    cfg = TaskConfig(type="idp", max_new_tokens=120)
    cfg.model.base_model = str(tiny_model_dir)
    registry = Registry(tmp_path / "runs")
    adapter = make_adapter(cfg, tmp_path / "adapter", seed=1)
    registry.register("invoices", "sft", adapter, {"field_f1": 0.1}, yaml.safe_dump(cfg.model_dump(mode="json")), {})
    engine = InferenceEngine(str(registry.root), ModelSettings(), fast_decode="fp16+bf16")
    engine.load()
    sizes, answers, errors = [], {}, {}
    batcher = DynamicBatcher(
        engine, extract_batch=8, extract_wait_ms=500, on_batch=lambda task, variant, n: sizes.append(n), continuous_extraction=continuous
    )
    documents = [d["document"] for d in invoices.generate(4, seed=2)] + ["word " * 9000]  # the last is over the context

    def ask(i):
        try:
            answers[i] = batcher.extract("invoices", "base", documents[i])
        except DocumentTooLong as exc:
            errors[i] = exc

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(documents))]
    if continuous:  # the first decode is running before the others are sent (not left to the threads' start-up order)
        threads[0].start()
        deadline = time.monotonic() + 60
        while not sizes and time.monotonic() < deadline:
            time.sleep(0.005)
    for t in threads[1:] if continuous else threads:
        t.start()
    for t in threads:
        t.join()
    together = batcher.extract("invoices", "base", documents[0])  # alone now
    batcher.close()
    _, [alone] = engine.extract("invoices", "base", documents[:1])
    engine.close()
    if continuous:  # the task's prompt prefix was prefilled once, then reused: the same answer as a whole prefill
        assert together[1].text == alone.text and len(batcher._extract._caches._items) == 1
    assert list(errors) == [4] and "context" in str(errors[4])
    assert sizes[0] == 5 if not continuous else (sizes[0] == 1 and max(sizes) >= 2)  # continuous: joined a running batch
    assert sorted(answers) == [0, 1, 2, 3] and all(extraction.valid for _, extraction in answers.values())
    assert together[1].valid and sizes[-1] == 1
