"""What an answer costs: token prices for hosted models, machine time for local ones.

add_cost(metrics, cfg)                                   # local: latency x cost.compute_usd_per_hour
add_cost(metrics, cfg, price_for("openai:gpt-x", cfg.teacher.prices))
"""

from __future__ import annotations

from core.common.config import Price, TaskConfig


def cost_usd(prompt_tokens: float, completion_tokens: float, price: Price | None) -> float:
    if price is None:
        return 0.0
    return (prompt_tokens * price.prompt + completion_tokens * price.completion) / 1e6


def price_for(teacher_name: str, prices: dict[str, Price] | None) -> Price | None:
    """The price entry for a teacher: by its model name ('gpt-x' for 'openai:gpt-x') or its full name."""
    prices = prices or {}
    return prices.get(teacher_name.split(":", 1)[-1]) or prices.get(teacher_name)


def add_cost(metrics: dict, cfg: TaskConfig, price: Price | None = None) -> dict:
    """`tokens_per_request` and `cost_per_1k_usd`: token prices when the model has them, else machine time.

    Local models are priced by what the machine costs while they answer
    (`cost.compute_usd_per_hour` x p50 latency), hosted ones by their token price table.
    """
    prompt, completion = metrics.get("prompt_tokens_per_request", 0.0), metrics.get("completion_tokens_per_request", 0.0)
    metrics["tokens_per_request"] = prompt + completion
    if price is not None:
        metrics["cost_per_1k_usd"] = 1000 * cost_usd(prompt, completion, price)
        metrics["cost_basis"] = "token prices"
    else:
        seconds = metrics.get("latency_ms_p50", 0.0) / 1000
        metrics["cost_per_1k_usd"] = 1000 * seconds * cfg.cost.compute_usd_per_hour / 3600
        metrics["cost_basis"] = f"machine time at ${cfg.cost.compute_usd_per_hour}/h"
    return metrics
