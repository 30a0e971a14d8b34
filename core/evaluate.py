"""Balanced evaluation of the base model and candidate adapters, side by side.

One base model is loaded; each adapter is attached beside it in turn, so an evaluation of base +
N candidates holds one copy of the weights. Every variant is scored with the calibrated decoder
(its own content-free prior: an adapter shifts the label prior too).

    report = evaluate_variants(cfg, eval_rows, {"sft": "runs/creditmix/sft/v0001"})
    report["base"]["macro_f1"], report["sft"]["macro_f1"]
"""

from __future__ import annotations

from pathlib import Path

from core.calibrated import CalibratedDecoder
from core.config import TaskConfig
from core.data import Example
from core.metrics import classification_metrics
from core.models import load_adapter, load_model


def decoder_for(cfg: TaskConfig, model, tokenizer, calibrate: bool | None = None) -> CalibratedDecoder:
    return CalibratedDecoder(
        model,
        tokenizer,
        cfg.labels,
        cfg.instruction,
        content_free_inputs=cfg.calibration.content_free_inputs,
        calibrate=cfg.calibration.enabled if calibrate is None else calibrate,
        label_bias=cfg.calibration.label_bias,
        batch_size=cfg.eval_batch_size,
    )


def score(decoder: CalibratedDecoder, rows: list[Example]) -> dict:
    """Metrics of one decoder on labeled rows, plus the uncalibrated label distribution for contrast."""
    preds = decoder.predict([r.text for r in rows])
    gold = [r.label for r in rows]
    metrics = classification_metrics(
        gold,
        [p.label for p in preds],
        decoder.labels,
        confidences=[p.confidence for p in preds],
        margins=[p.margin for p in preds],
        latencies_ms=[p.latency_ms for p in preds],
    )
    uncalibrated = [max(p.raw_probs, key=p.raw_probs.get) for p in preds]
    raw = classification_metrics(gold, uncalibrated, decoder.labels)
    metrics["uncalibrated"] = {
        "macro_f1": raw["macro_f1"],
        "accuracy": raw["accuracy"],
        "predicted_distribution": raw["predicted_distribution"],
    }
    metrics["calibration_prior"] = dict(zip(decoder.labels, map(float, decoder.prior()))) if decoder.calibrate else None
    metrics["latency_note"] = f"per request, amortised over batches of {decoder.batch_size}"
    metrics["predictions"] = [
        {"id": r.id, "gold": r.label, "pred": p.label, "confidence": round(p.confidence, 4)} for r, p in zip(rows, preds)
    ]
    return metrics


def evaluate_variants(cfg: TaskConfig, rows: list[Example], adapters: dict[str, str | Path], include_base: bool = True) -> dict[str, dict]:
    """Metrics for the base model (optional) and each named adapter on the same rows."""
    model, tokenizer = load_model(cfg.model)
    results: dict[str, dict] = {}
    if include_base:
        results["base"] = score(decoder_for(cfg, model, tokenizer), rows)
    for name, adapter_dir in adapters.items():
        model = load_adapter(model, adapter_dir, name=name)
        model.set_adapter(name)
        results[name] = score(decoder_for(cfg, model, tokenizer), rows)
    return results
