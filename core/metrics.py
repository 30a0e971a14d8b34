"""Classification metrics for balanced evaluation.

`classification_metrics` returns the fields every `metrics.json` and `distill-slm eval --json`
carry: accuracy, macro_f1, per_class, confusion_matrix, ece, latency_ms_p50/p95, n, plus the
top-2 margin distribution and the predicted-label distribution.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def expected_calibration_error(confidences: list[float], correct: list[bool], n_bins: int = 10) -> float:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by bin size."""
    conf = np.asarray(confidences, dtype=float)
    hit = np.asarray(correct, dtype=float)
    if conf.size == 0:
        return 0.0
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(hit[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def classification_metrics(
    gold: list[str],
    predicted: list[str | None],
    labels: list[str],
    confidences: list[float] | None = None,
    margins: list[float] | None = None,
    latencies_ms: list[float] | None = None,
) -> dict:
    """All evaluation figures for one model on one eval set. `None` predictions count as wrong."""
    pred = [p if p is not None else "<none>" for p in predicted]
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, pred, labels=labels, zero_division=0
    )
    per_class = {
        label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for label, p, r, f, s in zip(labels, precision, recall, f1, support)
    }
    out = {
        "n": len(gold),
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)),
        "per_class": per_class,
        "min_class_recall": float(min(recall)) if len(recall) else 0.0,
        "labels": labels,
        "confusion_matrix": confusion_matrix(gold, pred, labels=labels).tolist(),
        "predicted_distribution": {label: pred.count(label) for label in labels} | {"<none>": pred.count("<none>")},
    }
    if confidences is not None:
        out["ece"] = expected_calibration_error(confidences, [g == p for g, p in zip(gold, pred)])
    if margins is not None:
        m = np.asarray(margins, dtype=float)
        out["margin"] = {
            "p10": float(np.percentile(m, 10)),
            "p50": float(np.percentile(m, 50)),
            "p90": float(np.percentile(m, 90)),
            "histogram": np.histogram(m, bins=10, range=(0.0, 1.0))[0].tolist(),
        }
    if latencies_ms:
        out["latency_ms_p50"] = float(np.percentile(latencies_ms, 50))
        out["latency_ms_p95"] = float(np.percentile(latencies_ms, 95))
    return out
