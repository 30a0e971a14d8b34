"""register and promote: adapters into the registry, the alias moved only through the gate."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from prefect import get_run_logger, task

from core.common.config import TaskConfig
from core.kinds import kind_of
from core.registry import Registry


def model_card(cfg: TaskConfig, method: str, metrics: dict, baseline: dict | None) -> str:
    kind = kind_of(cfg)
    lines = [
        f"# {cfg.name} / {method}",
        "",
        f"LoRA adapter over `{cfg.model.base_model}` ({cfg.model.precision}, quantization {cfg.model.quantization}).",
        kind.card_line(cfg),
        "",
        "| metric | adapter | base |",
        "|---|---|---|",
    ]
    for key in kind.card_keys:
        base_value = f"{baseline[key]:.3f}" if baseline and key in baseline else "-"
        lines.append(f"| {key} | {metrics[key]:.3f} | {base_value} |")
    return "\n".join(lines) + "\n"


@task(name="register")
def register_task(cfg: TaskConfig, method: str, adapter_dir: str, eval_dir: str, fingerprint: dict) -> str:
    """Register an adapter with its metrics (base metrics kept beside them); return 'method/version'."""
    metrics = json.loads((Path(eval_dir) / f"{method}.metrics.json").read_text())
    base_path = Path(eval_dir) / "base.metrics.json"
    baseline = json.loads(base_path.read_text()) if base_path.exists() else None
    metrics.pop("predictions", None)
    if baseline:
        metrics["baseline"] = {k: v for k, v in baseline.items() if k != "predictions"}
    ref = Registry(cfg.runs_dir).register(
        cfg.name,
        method,
        adapter_dir,
        metrics,
        yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
        fingerprint,
        model_card(cfg, method, metrics, baseline),
    )
    get_run_logger().info("registered %s/%s", cfg.name, ref)
    return ref


@task(name="promote")
def promote_task(cfg: TaskConfig, ref: str) -> dict:
    """Move `production` to `ref` if it passes the task's promotion gate."""
    decision = Registry(cfg.runs_dir).promote(cfg.name, ref, cfg.promotion)
    get_run_logger().info("promotion of %s: %s (%s)", ref, "passed" if decision.passed else "refused", "; ".join(decision.reasons))
    return {"candidate": decision.candidate, "passed": decision.passed, "incumbent": decision.incumbent, "reasons": decision.reasons}
