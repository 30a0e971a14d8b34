"""The signals of a window against its reference and the verdict: the smallest p-value, Bonferroni-corrected over
the tests that ran, under `drift.p_drift` is `drift` (a retrain starts), under `drift.p_warn` `warn`, else `ok`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core.drift.statistics import Signal, ks_test, mmd_test, oov_test, proportion_test, wilson
from core.drift.windows import Reference, Window


# -- the assessment ------------------------------------------------------------------------------
def input_signals(
    reference: Reference, window: Window, embed: Callable[[list[str]], np.ndarray] | None, permutations: int, rng
) -> list[Signal]:
    if not window.inputs:
        return []
    ref_texts = reference.inputs
    signals = [Signal("input.length", *ks_test([len(t) for t in ref_texts], [len(t) for t in window.inputs]))]
    signals[-1].detail = {
        "mean_chars_reference": float(np.mean([len(t) for t in ref_texts])),
        "mean_chars_window": float(np.mean([len(t) for t in window.inputs])),
    }
    oov, p = oov_test(ref_texts, window.inputs, permutations, rng)
    signals.append(Signal("input.out_of_vocabulary", oov, p, {"share_of_window_words_unseen_in_reference": oov}))
    if embed is not None:
        mmd, p = mmd_test(embed(ref_texts), embed(window.inputs), permutations, rng)
        signals.append(Signal("input.embedding_mmd", mmd, p, {"embedder": "all-MiniLM-L6-v2", "mmd2": mmd}))
    return signals


def confidence_signals(reference: Reference, window: Window, threshold: float) -> list[Signal]:
    ref_conf = [v["confidence"] for v in reference.views if v.get("confidence") is not None]
    win_conf = [v["confidence"] for _, v in window.answers if v.get("confidence") is not None]
    if not ref_conf or not win_conf:
        return []
    statistic, p = ks_test(ref_conf, win_conf)
    detail = {
        "mean_reference": float(np.mean(ref_conf)),
        "mean_window": float(np.mean(win_conf)),
        "under_escalation_threshold_reference": float(np.mean(np.array(ref_conf) < threshold)),
        "under_escalation_threshold_window": float(np.mean(np.array(win_conf) < threshold)),
        "escalation_rate_window": window.escalated / max(window.answered, 1),
        "histogram_bins": np.linspace(0, 1, 11).tolist(),
        "histogram_reference": np.histogram(ref_conf, bins=10, range=(0, 1))[0].tolist(),
        "histogram_window": np.histogram(win_conf, bins=10, range=(0, 1))[0].tolist(),
    }
    return [Signal("confidence.distribution", statistic, p, detail)]


def estimated_quality(reference: Reference, window: Window, agreement: tuple[int, int] | None, teacher_note: str | None) -> dict:
    """Quality without labels: the confidence-based estimate (calibrated probabilities: expected accuracy = mean
    confidence) and, where the teacher answered a sample, the student's agreement with it beside evaluation's."""
    conf = [v["confidence"] for _, v in window.answers if v.get("confidence") is not None]
    ref_conf = [v["confidence"] for v in reference.views if v.get("confidence") is not None]
    quality: dict = {
        "confidence_based_accuracy_window": float(np.mean(conf)) if conf else None,
        "confidence_based_accuracy_reference": float(np.mean(ref_conf)) if ref_conf else None,
        "accuracy_measured_at_evaluation": reference.eval_metrics.get("accuracy"),
        "teacher_agreement_at_evaluation": reference.eval_metrics.get("teacher_agreement"),
    }
    if agreement is None:
        quality |= {"teacher_agreement": None, "teacher_note": teacher_note or "no teacher sample asked"}
    else:
        hits, n = agreement
        low, high = wilson(hits, n)
        quality |= {"teacher_agreement": hits / n if n else None, "teacher_agreement_ci95": [low, high], "teacher_sample": n}
    return quality


def agreement_signal(quality: dict, agreement: tuple[int, int] | None, eval_n: int) -> list[Signal]:
    at_eval = quality.get("teacher_agreement_at_evaluation")
    if agreement is None or at_eval is None or agreement[1] < 10 or not eval_n:
        return []
    hits, n = agreement
    p = proportion_test(round(at_eval * eval_n), eval_n, hits, n, lower_only=True)
    return [Signal("quality.teacher_agreement", hits / n, p, {"at_evaluation": at_eval, "evaluation_rows": eval_n})]


def verdict(signals: list[Signal], p_warn: float, p_drift: float, window_n: int, min_requests: int) -> tuple[str, list[str]]:
    """ok | warn | drift from the smallest Bonferroni-corrected p-value; with too few requests, ok (and the reason)."""
    tested = [s for s in signals if s.p_value is not None]
    if window_n < min_requests:
        return "ok", [f"{window_n} requests in the window, fewer than drift.min_requests ({min_requests}): no verdict drawn"]
    if not tested:
        return "ok", ["no test could run"]
    reasons, status = [], "ok"
    for s in tested:
        corrected = min(1.0, s.p_value * len(tested))
        s.detail["p_corrected"] = corrected
        if corrected < p_drift:
            status = "drift"
            reasons.append(f"{s.name}: corrected p {corrected:.2g} < p_drift {p_drift}")
        elif corrected < p_warn:
            status = "warn" if status == "ok" else status
            reasons.append(f"{s.name}: corrected p {corrected:.2g} < p_warn {p_warn}")
    return status, reasons


def assess(
    cfg,
    kind,
    reference: Reference,
    window: Window,
    embed: Callable[[list[str]], np.ndarray] | None,
    agreement: tuple[int, int] | None = None,
    teacher_note: str | None = None,
    seed: int = 0,
) -> dict:
    """Every signal of the window against the reference, the estimated quality and the verdict, as one JSON-able report."""
    rng = np.random.default_rng(seed)
    d = cfg.drift
    notes = []
    signals = input_signals(reference, window, embed, d.permutations, rng)
    if window.redacted:
        notes.append(
            f"{window.redacted} of {window.requests} requests were logged without their input (audit_redact): "
            "the input signals use only the rest"
            if window.inputs
            else "inputs are redacted: no input signals"
        )
    win_views = [v for _, v in window.answers]
    if win_views and reference.views:
        signals += kind.output_signals(reference.views, win_views)
        signals += confidence_signals(reference, window, cfg.escalation.threshold)
    elif window.requests:
        notes.append(f"no answers of production {window.production} in the window: output and confidence signals skipped")
    quality = estimated_quality(reference, window, agreement, teacher_note)
    signals += agreement_signal(quality, agreement, int(reference.eval_metrics.get("n") or 0))
    status, reasons = verdict(signals, d.p_warn, d.p_drift, window.requests, d.min_requests)
    return {
        "task": window.task,
        "production": window.production,
        "verdict": status,
        "reasons": reasons,
        "window": {
            "requests": window.requests,
            "answered_by_production": window.answered,
            "refused_requests": window.errors,
            "first_at": window.first_at,
            "last_at": window.last_at,
            "sampled_inputs": len(window.inputs),
            "skipped": dict(window.skipped),
        },
        "reference": {"ref": reference.ref, "source": reference.source, "inputs": len(reference.inputs)},
        "signals": [{"name": s.name, "statistic": s.statistic, "p_value": s.p_value, **s.detail} for s in signals],
        "quality": quality,
        "notes": notes,
        "thresholds": {
            "p_warn": d.p_warn,
            "p_drift": d.p_drift,
            "correction": f"Bonferroni over {sum(s.p_value is not None for s in signals)} tests",
        },
    }
