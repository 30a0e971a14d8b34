"""Balanced evaluation of the base model and candidate adapters, side by side.

One base model is loaded; each adapter is attached beside it in turn, so an evaluation of base +
N candidates holds one copy of the weights. Every variant is scored by label likelihood; the base model
with contextual calibration, adapters with the in-domain prior they carry (KD's) or else without
calibration unless `calibration.adapters` is set (on the demo, calibrating the SFT adapter on
content-free inputs cut its macro-F1 from 0.889 to 0.714: see README).

    report = evaluate_variants(cfg, eval_rows, {"sft": "runs/creditmix/sft/v0001"})
    report["base"]["macro_f1"], report["sft"]["macro_f1"]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.calibrated import CalibratedDecoder, load_label_prior, render_prompt
from core.config import Price, TaskConfig
from core.data import Example
from core.metrics import classification_metrics, extraction_metrics
from core.models import load_adapter, load_model
from core.schema import SchemaDecoder
from core.traces import cost_usd, input_sha256


def decoder_for(cfg: TaskConfig, model, tokenizer, adapter: str | Path | None) -> CalibratedDecoder:
    """The decoder a variant is scored with: the base model (`adapter` None) or the adapter in that folder.

    The base model divides out its prior on content-free inputs; an adapter divides out the prior
    it carries (measured on in-domain inputs, as KD's are), else is calibrated only if `calibration.adapters`.
    """
    prior = load_label_prior(adapter, cfg.labels) if adapter is not None else None
    calibrate = cfg.calibration.enabled and (adapter is None or prior is not None or cfg.calibration.adapters)
    return CalibratedDecoder(
        model,
        tokenizer,
        cfg.labels,
        cfg.instruction,
        content_free_inputs=cfg.calibration.content_free_inputs,
        calibrate=calibrate,
        label_bias=cfg.calibration.label_bias,
        batch_size=cfg.eval_batch_size,
        prior=prior,
    )


def score(decoder: CalibratedDecoder, rows: list[Example]) -> dict:
    """Metrics of one decoder on labeled rows, plus label choices with and without calibration for contrast."""
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
    raw = np.array([[p.raw_probs[label] for label in decoder.labels] for p in preds])
    for key, calibrate in (("with_calibration", True), ("without_calibration", False)):
        picked = [decoder.labels[i] for i in decoder.calibrated_log_probs(raw, calibrate).argmax(axis=1)]
        m = classification_metrics(gold, picked, decoder.labels)
        metrics[key] = {k: m[k] for k in ("macro_f1", "accuracy", "predicted_distribution")}
    metrics["calibrated"] = decoder.calibrate
    metrics["content_free_prior"] = dict(zip(decoder.labels, map(float, decoder.prior())))
    metrics["latency_note"] = f"per request, amortised over batches of {decoder.batch_size}"
    tokens = [len(decoder.tokenizer(render_prompt(decoder.tokenizer, decoder.instruction, r.text), add_special_tokens=False).input_ids) for r in rows]
    metrics["prompt_tokens_per_request"] = float(np.mean(tokens))
    metrics["completion_tokens_per_request"] = 0.0  # labels are scored, not generated
    metrics["predictions"] = [
        {"id": r.id, "gold": r.label, "pred": p.label, "confidence": round(p.confidence, 4)} for r, p in zip(rows, preds)
    ]
    return metrics


def extraction_decoder(cfg: TaskConfig, model, tokenizer, constrained: bool = True) -> SchemaDecoder:
    """The schema decoder every idp variant (base, adapters, the deliberate teacher) is run with."""
    return SchemaDecoder(
        model, tokenizer, cfg.task_schema(), cfg.instruction,
        max_new_tokens=cfg.max_new_tokens, batch_size=cfg.eval_batch_size, constrained=constrained,
    )


def score_extraction(decoder: SchemaDecoder, rows: list[Example]) -> dict:
    """Extraction metrics of one decoder on documents with gold targets."""
    results = decoder.extract([r.text for r in rows])
    metrics = extraction_metrics(
        [json.loads(r.label) for r in rows], [x.output for x in results], [x.valid for x in results],
        latencies_ms=[x.latency_ms for x in results],
    )
    metrics["latency_note"] = f"per document, amortised over batches of {decoder.batch_size}"
    metrics["prompt_tokens_per_request"] = float(np.mean([x.prompt_tokens for x in results]))
    metrics["completion_tokens_per_request"] = float(np.mean([x.completion_tokens for x in results]))
    metrics["predictions"] = [
        {"id": r.id, "valid": x.valid, "errors": x.errors, "output": x.output} for r, x in zip(rows, results)
    ]
    return metrics


def score_variant(cfg: TaskConfig, model, tokenizer, rows: list[Example], adapter: str | Path | None) -> dict:
    """One variant (the model with the adapter from folder `adapter` active, or the base) scored the way the task type is."""
    if cfg.type == "idp":
        return score_extraction(extraction_decoder(cfg, model, tokenizer), rows)
    return score(decoder_for(cfg, model, tokenizer, adapter=adapter), rows)


def evaluate_variants(cfg: TaskConfig, rows: list[Example], adapters: dict[str, str | Path], include_base: bool = True) -> dict[str, dict]:
    """Metrics for the base model (optional) and each named adapter on the same rows."""
    model, tokenizer = load_model(cfg.model)
    results: dict[str, dict] = {}
    if include_base:
        results["base"] = score_variant(cfg, model, tokenizer, rows, adapter=None)
    for name, adapter_dir in adapters.items():
        model = load_adapter(model, adapter_dir, name=name)
        model.set_adapter(name)
        results[name] = score_variant(cfg, model, tokenizer, rows, adapter=adapter_dir)
    return results


def teacher_metrics(cfg: TaskConfig, rows: list[Example], traces: dict[str, dict]) -> dict:
    """The teacher scored like any variant, from its traces on the eval rows (failed answers count as wrong)."""
    found = [traces.get(input_sha256(r.text)) for r in rows]
    if any(t is None for t in found):
        raise ValueError(f"{sum(t is None for t in found)} eval rows have no teacher trace")
    if cfg.type == "idp":
        outputs = [json.loads(t["output"]) if not t.get("error") else None for t in found]
        metrics = extraction_metrics([json.loads(r.label) for r in rows], outputs, [o is not None for o in outputs],
                                     latencies_ms=[t["latency_s"] * 1000 for t in found])
        metrics |= {"teacher": found[0]["teacher"], "failed": sum(o is None for o in outputs), "latency_note": "per document"}
        metrics["prompt_tokens_per_request"] = float(np.mean([t["prompt_tokens"] for t in found]))
        metrics["completion_tokens_per_request"] = float(np.mean([t["completion_tokens"] for t in found]))
        metrics["predictions"] = [{"id": r.id, "valid": o is not None, "output": o} for r, o in zip(rows, outputs)]
        return metrics
    preds = [t["output"] if not t.get("error") else None for t in found]
    confidences = [max((t.get("label_probs") or {"": 0.0}).values()) for t in found]
    metrics = classification_metrics(
        [r.label for r in rows], preds, cfg.labels, confidences=confidences,
        latencies_ms=[t["latency_s"] * 1000 for t in found],
    )
    metrics["teacher"] = found[0]["teacher"]
    metrics["failed"] = sum(p is None for p in preds)
    metrics["latency_note"] = "per request, one at a time"
    metrics["prompt_tokens_per_request"] = float(np.mean([t["prompt_tokens"] for t in found]))
    metrics["completion_tokens_per_request"] = float(np.mean([t["completion_tokens"] for t in found]))
    metrics["predictions"] = [
        {"id": r.id, "gold": r.label, "pred": p, "confidence": round(c, 4)} for r, p, c in zip(rows, preds, confidences)
    ]
    return metrics


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
        rows.append({
            "threshold": threshold, "escalation_rate": rate, "macro_f1": m["macro_f1"], "accuracy": m["accuracy"],
            "cost_per_1k_usd": student["cost_per_1k_usd"] + rate * teacher["cost_per_1k_usd"],
        })
    return rows
