"""The window over the audit log: exact counts in one pass, a bounded uniform sample, and records it must not count."""

from __future__ import annotations

from collections import Counter

from core.drift.windows import Window, _reservoir


def _record(i: int, **fields) -> dict:
    return {"at": 1000.0 + i, "task": "t", "input": f"text {i}", "output": "A", "adapter": "sft/v0002", "confidence": 0.9} | fields


def test_counts_are_exact_and_only_the_production_versions_answers_feed_the_output_signals():
    window = Window("t", "sft/v0002", lambda r: {"label": r["output"]} if "confidence" in r else None, 5, {"sft/v0001", "sft/v0002"})
    records = [_record(i) for i in range(20)]
    records += [_record(20, task="other"), _record(21, status=429, error="over limit"), {"at": 1.0, "task": "t", "route": "admin"}]
    records += [_record(22, adapter="sft/v0001"), _record(23, adapter="sft/v0000")]  # an older version; one deleted since
    records += [_record(24, input={"redacted": True}), _record(25, confidence=None) | {"confidence": None}]
    del records[-1]["confidence"]  # an answer without the fields drift reads
    records += [_record(26, tier="teacher", adapter="teacher:gpt", student={"adapter": "sft/v0002", "output": "B", "confidence": 0.2})]
    for record in records:
        window.observe(record)
    assert window.requests == 25 and window.errors == 1 and window.redacted == 1
    assert window.answered == 22 and window.escalated == 1  # the escalated answer counts as the student's, once
    assert window.skipped == Counter({"adapter no longer registered (output signals)": 1, "answer without the fields drift needs": 1})
    assert len(window.inputs) == 5 and len(window.answers) == 5  # the sample stays at sample_size
    assert (window.first_at, window.last_at) == (1000.0, 1026.0)


def test_the_reservoir_is_a_uniform_sample_of_everything_seen():
    import random

    rng, hits = random.Random(0), Counter()
    for _ in range(3000):
        sample: list[int] = []
        for seen, item in enumerate(range(10), start=1):
            _reservoir(sample, item, seen, 3, rng)
        hits.update(sample)
    assert set(hits) == set(range(10))
    assert max(hits.values()) / min(hits.values()) < 1.25  # each item in ~900 of the 3000 samples, the last ones too
