"""Variants side by side on the same rows: the base model and each adapter, one copy of the weights.

One base model is loaded; each adapter is attached beside it in turn, so an evaluation of base +
N candidates holds one copy of the weights. How a variant is scored is the task kind's
(its decoder and `score`); this module only runs them and compares.

    report = evaluate_variants(for_config(cfg, ModelSettings()), eval_rows, {"sft": "runs/creditmix/sft/v0001"})
    report["base"]["macro_f1"], report["sft"]["macro_f1"]
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.common.config import TaskConfig
from core.common.rows import Example
from core.evaluation.metrics import classification_metrics
from core.model.loading import activate_adapter, load_model

TRAINING = "<training>"  # `kind.decoder(..., adapter=TRAINING)`: the adapter being trained, scored as saved adapters are


def score_variant(
    kind, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[Example], adapter: str | Path | None
) -> dict:
    """One variant's metrics on rows with answers: the base model (`adapter` None) or the adapter active on `model`.
    `kind`: the task's kind (`core.kinds.for_config`), whose decoder and scoring apply."""
    return kind.score(kind.decoder(model, tokenizer, adapter), rows)


def validation_score(kind, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[Example]) -> float:
    """The primary metric of the model being trained (its adapter active) on validation rows."""
    metrics = score_variant(kind, model, tokenizer, rows, TRAINING)
    return metrics.get(kind.cfg.promotion.primary_metric, metrics.get(kind.summary_keys[0]))


def evaluate_variants(kind, rows: list[Example], adapters: dict[str, str | Path], include_base: bool = True) -> dict[str, dict]:
    """Metrics for the base model (optional) and each named adapter on the same rows, one copy of the weights loaded."""
    model, tokenizer = load_model(kind.cfg.model, kind.settings)
    results: dict[str, dict] = {}
    if include_base:
        results["base"] = score_variant(kind, model, tokenizer, rows, None)
    for name, adapter_dir in adapters.items():
        model = activate_adapter(model, adapter_dir, name=name)
        results[name] = score_variant(kind, model, tokenizer, rows, adapter_dir)
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
