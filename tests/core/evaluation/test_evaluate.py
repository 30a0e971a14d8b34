"""Variants side by side on one copy of the weights; what they cost; what escalation to the teacher buys."""

import pytest

from core.common.config import Price, TaskConfig
from core.evaluation.cost import add_cost, price_for
from core.evaluation.evaluate import cascade_table, evaluate_variants
from core.kinds import for_config
from core.kinds.data import labeled_rows
from core.settings import ModelSettings
from demos import creditmix
from tests.conftest import make_adapter


def test_local_models_cost_machine_time_and_hosted_ones_their_token_price():
    cfg = TaskConfig()
    local = add_cost({"latency_ms_p50": 360.0, "prompt_tokens_per_request": 100.0}, cfg)
    assert local["cost_per_1k_usd"] == pytest.approx(1000 * 0.36 * cfg.cost.compute_usd_per_hour / 3600)
    prices = {"big": Price(prompt=1.0, completion=2.0)}
    assert price_for("openai:big", prices) is prices["big"] and price_for("openai:other", prices) is None
    hosted = add_cost({"prompt_tokens_per_request": 100.0, "completion_tokens_per_request": 10.0}, cfg, prices["big"])
    assert hosted["cost_per_1k_usd"] == pytest.approx(1000 * (100 * 1.0 + 10 * 2.0) / 1e6) and hosted["cost_basis"] == "token prices"


def test_the_cascade_takes_the_teachers_answer_below_each_threshold():
    cfg = TaskConfig()
    cfg.escalation.report_thresholds = [0.0, 0.7, 1.01]
    student = {
        "cost_per_1k_usd": 1.0,
        "predictions": [
            {"id": "a", "gold": "Good", "pred": "Bad", "confidence": 0.5},
            {"id": "b", "gold": "Bad", "pred": "Bad", "confidence": 0.9},
        ],
    }
    teacher = {"cost_per_1k_usd": 10.0, "predictions": [{"id": "a", "pred": "Good"}, {"id": "b", "pred": "Good"}]}
    never, some, always = cascade_table(cfg, student, teacher)
    assert (never["escalation_rate"], never["accuracy"], never["cost_per_1k_usd"]) == (0.0, 0.5, 1.0)
    assert (some["escalation_rate"], some["accuracy"], some["cost_per_1k_usd"]) == (0.5, 1.0, 6.0)
    assert (always["escalation_rate"], always["accuracy"]) == (1.0, 0.5)


def test_evaluate_scores_base_and_adapters_on_the_same_rows(tiny_cfg, tmp_path):
    kind = for_config(tiny_cfg, ModelSettings())
    rows, _ = labeled_rows(
        for_config(tiny_cfg.model_copy(update={"data": tiny_cfg.data.model_copy(update={"train": None})}), ModelSettings())
    )
    rows = rows[:9]
    adapter = make_adapter(tiny_cfg, tmp_path / "adapter", seed=3)
    results = evaluate_variants(kind, rows, {"sft": adapter})
    assert set(results) == {"base", "sft"} and all(r["n"] == 9 for r in results.values())
    assert [p["id"] for p in results["base"]["predictions"]] == [p["id"] for p in results["sft"]["predictions"]]
    assert results["base"]["calibrated"] and not results["sft"]["calibrated"]  # adapters are scored uncalibrated by default
    assert len(creditmix.LABELS) == len(results["sft"]["per_class"])
