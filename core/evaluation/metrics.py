"""Evaluation metrics: classification (balanced) and extraction (field-level).

`classification_metrics` returns the fields every `metrics.json` and `distill-slm eval --json`
carry: accuracy, macro_f1, per_class, confusion_matrix, ece, latency_ms_p50/p95, n, plus the
top-2 margin distribution and the predicted-label distribution.
"""

from __future__ import annotations

import re
from datetime import date

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_curve, precision_recall_fscore_support


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


def confidence_threshold(confidences: list[float], correct: list[bool], min_precision: float) -> dict:
    """The lowest confidence at which answers are at least `min_precision` correct (the most answers kept at that
    precision), with the precision and the share of answers kept there; `threshold` None when no threshold reaches it."""
    conf, hit = np.asarray(confidences, dtype=float), np.asarray(correct, dtype=bool)
    found = {"threshold": None, "precision": None, "kept_share": 0.0, "answers": int(conf.size), "correct": int(hit.sum())}
    if conf.size == 0 or not hit.any():
        return found
    if hit.all():
        return found | {"threshold": float(conf.min()), "precision": 1.0, "kept_share": 1.0}
    precision, _, thresholds = precision_recall_curve(hit, conf)
    reaching = np.flatnonzero(precision[:-1] >= min_precision)  # the last point (precision 1, no threshold) is not one
    if reaching.size == 0:
        return found
    threshold = float(thresholds[reaching[0]])
    return found | {"threshold": threshold, "precision": float(precision[reaching[0]]), "kept_share": float((conf >= threshold).mean())}


def macro_f1_interval(gold: list[str], predicted: list[str], labels: list[str], level: float = 0.95, resamples: int = 2000) -> list[float]:
    """A percentile-bootstrap interval for macro-F1 over the eval rows (seeded: the same rows give the same interval).

    On a small eval split the figure moves by several points from one draw of rows to the next; the interval says
    how far, so two variants whose intervals overlap widely are not told apart by this split.
    """
    if not gold:
        return [0.0, 0.0]
    picks = np.random.default_rng(0).integers(0, len(gold), size=(resamples, len(gold)))
    macro = resampled_macro_f1(gold, predicted, labels, picks)
    tail = (1 - level) / 2 * 100
    return [round(float(np.percentile(macro, tail)), 4), round(float(np.percentile(macro, 100 - tail)), 4)]


def resampled_macro_f1(gold: list[str], predicted: list[str | None], labels: list[str], picks: np.ndarray) -> np.ndarray:
    """Macro-F1 on each resample of the rows (`picks`: resamples x rows, indices into `gold`), as sklearn's macro
    average over `labels` (a label absent from a resample scoring 0), computed for all resamples at once."""
    index = {label: i for i, label in enumerate(labels)}
    n_labels = len(labels) + 1  # the last column: a prediction outside the label set
    g = np.array([index.get(x, len(labels)) for x in gold])
    p = np.array([index.get(x, len(labels)) for x in predicted])
    resamples = picks.shape[0]
    cells = (np.arange(resamples)[:, None] * n_labels * n_labels + g[picks] * n_labels + p[picks]).ravel()
    confusion = np.bincount(cells, minlength=resamples * n_labels * n_labels).reshape(resamples, n_labels, n_labels)
    hits = confusion[:, np.arange(len(labels)), np.arange(len(labels))]
    support, called = confusion.sum(axis=2)[:, : len(labels)], confusion.sum(axis=1)[:, : len(labels)]
    f1 = np.where(support + called > 0, 2 * hits / np.maximum(support + called, 1), 0.0)
    return f1.mean(axis=1)


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
    precision, recall, f1, support = precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
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
        "macro_f1_ci": macro_f1_interval(gold, pred, labels),
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


# ---- extraction (idp) ------------------------------------------------------------------------

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def flatten(value, prefix: str = "") -> dict[str, object]:
    """Leaf fields by path: {"vendor.name": ..., "items[0].qty": ...}; empty objects/arrays count as leaves."""
    if isinstance(value, dict) and value:
        out: dict[str, object] = {}
        for key, child in value.items():
            out |= flatten(child, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, child in enumerate(value):
            out |= flatten(child, f"{prefix}[{i}]")
        return out
    return {prefix: value}


def _normal(value):
    """Comparable form of a leaf: numbers to 2 decimals, ISO dates as dates, strings trimmed and case-folded."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return round(float(value), 2)
    if isinstance(value, str):
        text = " ".join(value.split())
        if _ISO_DATE.match(text):
            try:
                return date.fromisoformat(text)
            except ValueError:
                return text
        return text.casefold()
    return value


def field_diff(gold: dict, predicted: dict | None) -> dict:
    """Correct, wrong, missing and extra leaf fields of one document (None = nothing usable was produced)."""
    g, p = flatten(gold), flatten(predicted) if predicted is not None else {}
    correct = sum(1 for k in g if k in p and _normal(g[k]) == _normal(p[k]))
    wrong = sum(1 for k in g if k in p and _normal(g[k]) != _normal(p[k]))
    return {
        "gold": len(g),
        "predicted": len(p),
        "correct": correct,
        "wrong": wrong,
        "missing": sum(1 for k in g if k not in p),
        "extra": sum(1 for k in p if k not in g),
    }


def resampled_field_f1(gold: list[dict], predicted: list[dict | None], picks: np.ndarray) -> np.ndarray:
    """`extraction_metrics`' field F1 (micro over leaf paths) on each resample of the documents (`picks`: resamples x
    documents)."""
    diffs = [field_diff(g, p) for g, p in zip(gold, predicted)]
    counts = np.array([[d["correct"], d["predicted"], d["gold"]] for d in diffs], dtype=float).reshape(-1, 3)
    correct, n_pred, n_gold = counts[picks].sum(axis=1).T
    precision = np.divide(correct, n_pred, out=np.zeros_like(correct), where=n_pred > 0)
    recall = np.divide(correct, n_gold, out=np.zeros_like(correct), where=n_gold > 0)
    total = precision + recall
    return np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)


def extraction_metrics(gold: list[dict], predicted: list[dict | None], valid: list[bool], latencies_ms: list[float] | None = None) -> dict:
    """Schema validity, field-level precision/recall/F1 (micro over leaf paths), exact documents, correction effort.

    Correction effort is what a person would fix per document: every wrong, missing or extra field is one edit.
    """
    diffs = [field_diff(g, p) for g, p in zip(gold, predicted)]
    correct = sum(d["correct"] for d in diffs)
    n_pred, n_gold = sum(d["predicted"] for d in diffs), sum(d["gold"] for d in diffs)
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_gold if n_gold else 0.0
    edits = [d["wrong"] + d["missing"] + d["extra"] for d in diffs]
    by_field: dict[str, list[int]] = {}
    for g, p in zip(gold, predicted):
        fp = flatten(p) if p is not None else {}
        for path, value in flatten(g).items():
            top = re.sub(r"\[\d+\]", "[]", path)
            by_field.setdefault(top, [0, 0])
            by_field[top][0] += path in fp and _normal(fp[path]) == _normal(value)
            by_field[top][1] += 1
    out = {
        "n": len(gold),
        "schema_valid_rate": float(np.mean(valid)) if valid else 0.0,
        "field_precision": precision,
        "field_recall": recall,
        "field_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "exact_match": float(np.mean([e == 0 for e in edits])) if edits else 0.0,
        "corrections_per_doc": float(np.mean(edits)) if edits else 0.0,
        "field_accuracy": {k: round(c / t, 4) for k, (c, t) in sorted(by_field.items())},
    }
    if latencies_ms:
        out["latency_ms_p50"] = float(np.percentile(latencies_ms, 50))
        out["latency_ms_p95"] = float(np.percentile(latencies_ms, 95))
    return out


# ---- free text ---------------------------------------------------------------------------------

CHRF_ORDER, CHRF_BETA = 6, 2.0  # chrF's defaults (Popović 2015; sacrebleu's CHRF): character 1- to 6-grams, recall weighted 2x


def _char_ngrams(text: str, n: int) -> dict[str, int]:
    chars = "".join(text.split())  # whitespace ignored, as sacrebleu's chrF does
    grams: dict[str, int] = {}
    for i in range(len(chars) - n + 1):
        grams[chars[i : i + n]] = grams.get(chars[i : i + n], 0) + 1
    return grams


def chrf(hypothesis: str, reference: str) -> float:
    """Sentence-level chrF in [0, 1]: the F-beta of character n-gram precision and recall, averaged over n = 1..6. An
    answer scores by how much of the reference's wording it shares, so a paraphrase earns part credit and an empty
    answer 0; identical texts score 1."""
    if hypothesis == reference:
        return 1.0
    precisions, recalls = [], []
    for n in range(1, CHRF_ORDER + 1):
        hyp, ref = _char_ngrams(hypothesis, n), _char_ngrams(reference, n)
        if not hyp or not ref:
            continue
        matched = sum(min(count, ref.get(gram, 0)) for gram, count in hyp.items())
        precisions.append(matched / sum(hyp.values()))
        recalls.append(matched / sum(ref.values()))
    if not precisions:
        return 0.0
    p, r = float(np.mean(precisions)), float(np.mean(recalls))
    b2 = CHRF_BETA**2
    return (1 + b2) * p * r / (b2 * p + r) if p + r else 0.0


def text_metrics(gold: list[str], predicted: list[str], latencies_ms: list[float] | None = None) -> dict:
    """Free-text answers against the references: chrF (mean over rows; per row in `chrf_per_row`), exact match after
    trimming whitespace, and how long the answers run against the references."""
    scores = [chrf(p.strip(), g.strip()) for g, p in zip(gold, predicted)]
    out = {
        "n": len(gold),
        "chrf": float(np.mean(scores)) if scores else 0.0,
        "exact_match": float(np.mean([p.strip() == g.strip() for g, p in zip(gold, predicted)])) if gold else 0.0,
        "length_ratio": float(sum(len(p) for p in predicted) / max(1, sum(len(g) for g in gold))),
        "chrf_per_row": [round(s, 4) for s in scores],
    }
    if latencies_ms:
        out["latency_ms_p50"] = float(np.percentile(latencies_ms, 50))
        out["latency_ms_p95"] = float(np.percentile(latencies_ms, 95))
    return out
