"""Variants side by side on the same rows: the base model and each adapter, one copy of the weights.

One base model is loaded; each adapter is attached beside it in turn, so an evaluation of base +
N candidates holds one copy of the weights. How a variant is scored is the task kind's
(`kind.score_variant`); this module only runs them and compares.

    report = evaluate_variants(cfg, eval_rows, {"sft": "runs/creditmix/sft/v0001"}, kind.score_variant)
    report["base"]["macro_f1"], report["sft"]["macro_f1"]
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.common.config import TaskConfig
from core.common.rows import Example
from core.evaluation.metrics import classification_metrics
from core.model.loading import activate_adapter, load_model

# (model, tokenizer, rows, adapter folder or None for the base) -> metrics (a task kind's, bound to the task's config)
ScoreVariant = Callable[[PreTrainedModel, PreTrainedTokenizerBase, list[Example], "str | Path | None"], dict]


def evaluate_variants(
    cfg: TaskConfig, rows: list[Example], adapters: dict[str, str | Path], score_variant: ScoreVariant, include_base: bool = True
) -> dict[str, dict]:
    """Metrics for the base model (optional) and each named adapter on the same rows."""
    model, tokenizer = load_model(cfg.model)
    results: dict[str, dict] = {}
    if include_base:
        results["base"] = score_variant(model, tokenizer, rows, None)
    for name, adapter_dir in adapters.items():
        model = activate_adapter(model, adapter_dir, name=name)
        results[name] = score_variant(model, tokenizer, rows, adapter_dir)
    return results


def cascade_table(cfg: TaskConfig, student: dict, teacher: dict) -> list[dict]:
    """Accuracy and cost of `auto` (student, escalating to the teacher under a confidence threshold) at each threshold.

    Computed from the two variants' predictions on the same eval rows: a row escalates when the
    student's confidence is below the threshold and then takes the teacher's answer.
    """
    by_id = {p["id"]: p for p in teacher["predictions"]}
    rows = []
    for threshold in cfg.escalation.report_thresholds:
        gold, picked, escalated = [], [], 0
        for p in student["predictions"]:
            gold.append(p["gold"])
            if p["confidence"] < threshold:
                escalated += 1
                picked.append(by_id[p["id"]]["pred"])
            else:
                picked.append(p["pred"])
        m = classification_metrics(gold, picked, cfg.labels)
        rate = escalated / max(len(gold), 1)
        rows.append(
            {
                "threshold": threshold,
                "escalation_rate": rate,
                "macro_f1": m["macro_f1"],
                "accuracy": m["accuracy"],
                "cost_per_1k_usd": student["cost_per_1k_usd"] + rate * teacher["cost_per_1k_usd"],
            }
        )
    return rows
