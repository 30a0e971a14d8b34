"""bench kd's hidden gold: the pool's labels keyed as the trace cache keys the same inputs, so the teacher's accuracy on
the pool is measured on every input it answered."""

from bench.kd import _gold
from core.common.rows import Example, text_sha256
from demos import creditmix


def test_the_hidden_gold_covers_the_pool_under_the_trace_caches_keys():
    pool = [Example(r["id"], r["text"]) for r in creditmix.generate(20, seed=8)]
    gold = _gold(20, seed=8)
    assert {text_sha256(row.text) for row in pool} == set(gold)
    assert set(gold.values()) <= {"Good", "Standard", "Bad"}
