"""Sharded evaluation on a real cluster (the session's Ray head node and second node; its Dask scheduler and two
workers): the merged metrics equal one process's to the last digit, for the base model and two adapters."""

from __future__ import annotations

import pytest

from core.common.cluster import connect
from core.common.config import ScaleConfig
from core.common.rows import Example
from core.evaluation.evaluate import evaluate_variants
from core.evaluation.sharded import Replayed, evaluate_sharded, shard_bounds
from core.kinds import for_config
from core.settings import ModelSettings
from demos import creditmix
from tests.conftest import make_adapter

TIMINGS = ("latency", "throughput")  # measured, not computed: they differ between any two runs


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not any(word in k for word in TIMINGS)}


@pytest.mark.parametrize("runner", ["ray", "dask"])
def test_sharded_metrics_equal_one_process_to_the_last_digit(runner, request, tiny_cfg, tmp_path):
    address = request.getfixturevalue(f"{runner}_cluster")
    rows = [Example(**r) for r in creditmix.generate(30, seed=11)]
    adapters = {"one": make_adapter(tiny_cfg, tmp_path / "one", seed=1), "two": make_adapter(tiny_cfg, tmp_path / "two", seed=2)}
    tiny_cfg.eval_batch_size = 4  # 30 rows: 8 batches, 4 shards of 2 batches, the last one short
    tiny_cfg.scale = ScaleConfig(runner=runner, address=address, eval_workers=2, worker_cpus=0.5)
    kind = for_config(tiny_cfg, ModelSettings())

    local = evaluate_variants(kind, rows, adapters)
    sharded = evaluate_sharded(kind, rows, adapters, connect(tiny_cfg.scale))

    assert list(sharded) == ["base", "one", "two"]
    for name in local:
        assert comparable(sharded[name]) == comparable(local[name]), name
    assert local["one"]["predictions"] != local["two"]["predictions"]  # the adapters answer differently: each was applied


def test_shards_hold_whole_batches_in_order():
    assert shard_bounds(30, 4, 2) == [(0, 8), (8, 16), (16, 24), (24, 30)]
    assert shard_bounds(3, 8, 4) == [(0, 3)]


def test_a_replayed_decoder_answers_other_texts_itself():
    class Labels:
        answers = "labels"
        labels = ["a", "b"]

        def predict(self, texts):
            return [f"own {t}" for t in texts]

    replayed = Replayed(Labels(), ["x", "y"], ["merged x", "merged y"])
    assert replayed.predict(["x", "y"]) == ["merged x", "merged y"]
    assert replayed.predict(["z"]) == ["own z"] and replayed.labels == ["a", "b"]
