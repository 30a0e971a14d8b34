"""What an answer costs: token prices for hosted teachers, machine time for local models."""

from __future__ import annotations

import pytest

from core.common.config import Price, TaskConfig
from core.evaluation.cost import add_cost, cost_usd, price_for


def test_hosted_answers_are_priced_per_token_and_local_ones_by_machine_time():
    cfg = TaskConfig()
    cfg.cost.compute_usd_per_hour = 3.6  # a tenth of a cent per second
    local = add_cost({"prompt_tokens_per_request": 100.0, "completion_tokens_per_request": 2.0, "latency_ms_p50": 250.0}, cfg)
    assert local["tokens_per_request"] == 102.0
    assert local["cost_per_1k_usd"] == pytest.approx(1000 * 0.25 * 3.6 / 3600)  # 1k answers of 0.25 s at $3.6/h
    assert local["cost_basis"] == "machine time at $3.6/h"
    hosted = add_cost({"prompt_tokens_per_request": 100.0, "completion_tokens_per_request": 2.0}, cfg, Price(prompt=2.0, completion=8.0))
    assert hosted["cost_per_1k_usd"] == pytest.approx(1000 * (100 * 2.0 + 2 * 8.0) / 1e6)
    assert hosted["cost_basis"] == "token prices"


def test_a_teacher_is_priced_by_its_model_name_or_its_full_name():
    prices = {"gpt-x": Price(prompt=1.0), "hf:local-7b": Price(prompt=0.5)}
    assert price_for("openai:gpt-x", prices).prompt == 1.0
    assert price_for("hf:local-7b", prices).prompt == 0.5
    assert price_for("openai:gpt-y", prices) is None and price_for("openai:gpt-x", None) is None
    assert cost_usd(1e6, 1e6, None) == 0.0
