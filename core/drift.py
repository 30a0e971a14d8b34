"""Drift: is the traffic a served adapter answers still the traffic it was trained and evaluated for?

The reference is the production adapter's own answers to inputs of the task's distribution (see
`TaskKind.reference_rows`); the window is the audit log's records of the task since the last run,
streamed once (`Window.observe` keeps exact counts and a fixed-size uniform sample, so memory does
not grow with the log). Each signal is a test with a p-value whose null comes from the data
themselves (permutations of reference and window, or the standard two-sample tests), so its
threshold follows the reference's own spread rather than a fixed constant:

- input: sentence-embedding MMD (MiniLM, RBF kernel at the median distance, permutation p-value),
  input length (Kolmogorov-Smirnov), out-of-vocabulary share of words (permutation p-value);
- output: the task kind's (`TaskKind.output_signals`: label distribution, schema-valid rate, ...);
- confidence: calibrated confidence distribution (KS), with the escalation rate and the share under
  the escalation threshold reported beside it;
- quality without labels: agreement of the student with the teacher on a sample of the window
  (Wilson interval; one-sided test against the agreement measured at evaluation time) and the
  confidence-based estimate of accuracy (mean calibrated confidence, as NannyML's CBPE).

The verdict takes the smallest p-value, Bonferroni-corrected over the tests that ran: under
`drift.p_drift` it is `drift` (a retrain starts), under `drift.p_warn` `warn` (reported), else `ok`.

    window = Window(task, production_ref, kind, sample_size=500)
    for record in iter_audit(log, since, until): window.observe(record)
    report = assess(cfg, kind, reference, window, embed, rng)
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
from scipy import stats

from core.common.files import atomic_write_text
from core.common.rows import Example, text_sha256
from core.errors import TeacherUnavailable
from core.evaluation.cost import cost_usd, price_for
from core.model.loading import activate_adapter, load_model
from core.teachers.backends import build_teacher
from core.teachers.deliberate import load_embedder
from core.teachers.traces import TraceStore, generate_traces

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402

WORD = re.compile(r"[^\W\d_]+")


@dataclass
class Signal:
    name: str  # input.embedding, input.length, ...
    statistic: float | None
    p_value: float | None  # None: reported, not tested
    detail: dict = field(default_factory=dict)


@dataclass
class Reference:
    """The production adapter's answers to inputs of the task's distribution, and what evaluation measured."""

    ref: str  # method/version
    source: str  # where the inputs came from
    inputs: list[str]
    views: list[dict]  # the kind's drift view of each answer (label, confidence, validity, ...)
    eval_metrics: dict  # the registered metrics (accuracy, teacher_agreement, ...)


class Window:
    """One pass over the audit records of a window: exact counts, and a uniform sample (reservoir) of the task's requests."""

    def __init__(
        self,
        task: str,
        production: str,
        view: Callable[[dict], dict | None],
        sample_size: int,
        registered: set[str] | None = None,
        seed: int = 0,
    ) -> None:
        self.task, self.production, self.view, self.registered = task, production, view, registered
        self.sample_size = sample_size
        self.rng = random.Random(seed)
        self.requests = 0  # answered requests of the task (any variant): the input signals
        self.answered = 0  # of those, answered by the production version (or escalated from it): the output signals
        self.escalated = 0
        self.skipped: Counter = Counter()
        self.errors = 0  # refused requests (4xx) naming the task
        self.redacted = 0
        self.inputs: list[str] = []  # reservoir over requests
        self.answers: list[tuple[str | None, dict]] = []  # reservoir over production answers: (input, view)
        self.first_at: float | None = None
        self.last_at: float | None = None

    def observe(self, record: dict) -> None:
        if record.get("task") != self.task:
            return
        if record.get("status") or record.get("error"):
            self.errors += 1
            return
        if "output" not in record:
            return  # an admin action
        at = record.get("at")
        self.first_at = at if self.first_at is None else min(self.first_at, at)
        self.last_at = at if self.last_at is None else max(self.last_at, at)
        text = record.get("input")
        if not isinstance(text, str):
            self.redacted += 1
            text = None
        self.requests += 1
        if text is not None:
            _reservoir(self.inputs, text, self.requests - self.redacted, self.sample_size, self.rng)
        student = record.get("student") or record  # escalated: the student's own answer was kept beside the teacher's
        adapter = student.get("adapter")
        if adapter != self.production:
            if adapter not in ("base", None) and self.registered is not None and adapter not in self.registered:
                self.skipped["adapter no longer registered (output signals)"] += 1
            return
        view = self.view(student)
        if view is None:
            self.skipped["answer without the fields drift needs"] += 1
            return
        self.answered += 1
        self.escalated += record.get("tier") == "teacher"
        _reservoir(self.answers, (text, view), self.answered, self.sample_size, self.rng)


def _reservoir(sample: list, item, seen: int, size: int, rng: random.Random) -> None:
    """Algorithm R: after `seen` items, `sample` is a uniform draw of min(seen, size) of them."""
    if len(sample) < size:
        sample.append(item)
    else:
        j = rng.randrange(seen)
        if j < size:
            sample[j] = item


# -- tests ---------------------------------------------------------------------------------------
def mmd_test(reference: np.ndarray, window: np.ndarray, permutations: int, rng: np.random.Generator) -> tuple[float, float]:
    """Squared maximum mean discrepancy (RBF kernel, bandwidth the median pairwise distance) and its permutation p-value.

    All permutations at once: with s the +1/m, -1/n membership vector, MMD^2 = s'Ks, so P permutations cost one
    (m+n) x (m+n) by (m+n) x P product."""
    pooled = np.concatenate([reference, window]).astype(np.float64)
    sq = (pooled**2).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * pooled @ pooled.T, 0)
    bandwidth = np.median(d2[np.triu_indices(len(pooled), 1)]) or 1.0
    kernel = np.exp(-d2 / bandwidth)
    m, n = len(reference), len(window)
    s = np.concatenate([np.full(m, 1 / m), np.full(n, -1 / n)])
    observed = float(s @ kernel @ s)
    shuffled = np.stack([rng.permutation(s) for _ in range(permutations)], axis=1)
    null = np.einsum("ip,ip->p", shuffled, kernel @ shuffled)
    return observed, float((1 + (null >= observed).sum()) / (1 + permutations))


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def oov_test(reference: list[str], window: list[str], permutations: int, rng: np.random.Generator) -> tuple[float, float]:
    """Share of the window's words that no reference input holds, and its permutation p-value (reference and window
    inputs shuffled between the two sides, the vocabulary rebuilt from each permuted reference)."""
    tokens = [words(t) for t in reference + window]
    vocab_sets = [set(t) for t in tokens]
    m = len(reference)

    def share(ref_idx, win_idx) -> float:
        vocab = set().union(*(vocab_sets[i] for i in ref_idx))
        total = sum(len(tokens[i]) for i in win_idx)
        return sum(w not in vocab for i in win_idx for w in tokens[i]) / total if total else 0.0

    everyone = np.arange(len(tokens))
    observed = share(everyone[:m], everyone[m:])
    null = []
    for _ in range(permutations):
        order = rng.permutation(everyone)
        null.append(share(order[:m], order[m:]))
    return observed, float((1 + sum(v >= observed for v in null)) / (1 + permutations))


def ks_test(reference: list[float], window: list[float]) -> tuple[float, float]:
    result = stats.ks_2samp(reference, window)
    return float(result.statistic), float(result.pvalue)


def counts_test(reference: Counter, window: Counter, categories: list) -> tuple[float, float, float]:
    """Chi-squared test of two count vectors over `categories` (categories empty on both sides dropped) and the
    Jensen-Shannon distance of the two distributions."""
    table = np.array([[reference.get(c, 0) for c in categories], [window.get(c, 0) for c in categories]], dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0.0
    chi2, p, _, _ = stats.chi2_contingency(table)
    p_ref, p_win = table[0] / table[0].sum(), table[1] / table[1].sum()
    mid = (p_ref + p_win) / 2
    js = math.sqrt(max(0.5 * (stats.entropy(p_ref, mid, base=2) + stats.entropy(p_win, mid, base=2)), 0.0))
    return float(chi2), float(p), js


def proportion_test(ref_hits: int, ref_n: int, win_hits: int, win_n: int, lower_only: bool = False) -> float:
    """p-value that the window's proportion differs from the reference's (or, `lower_only`, fell below it): Fisher's exact test."""
    table = [[ref_hits, ref_n - ref_hits], [win_hits, win_n - win_hits]]
    return float(stats.fisher_exact(table, alternative="greater" if lower_only else "two-sided").pvalue)


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


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
        signals += kind.output_signals(cfg, reference.views, win_views)
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


def write_report(report: dict, history: list[dict], out_dir, stamp: str) -> dict[str, str]:
    """`<stamp>.json`, `<stamp>.md` and its plots (label or validity shares then vs now, confidence histograms, the
    embedding score over the last nights) under `out_dir`; return their paths."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_name = {s["name"]: s for s in report["signals"]}
    images = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    if "output.labels" in by_name:
        s = by_name["output.labels"]
        labels = list(s["reference"])
        x = np.arange(len(labels))
        axes[0].bar(x - 0.2, [s["reference"][k] for k in labels], 0.4, label="reference")
        axes[0].bar(x + 0.2, [s["window"][k] for k in labels], 0.4, label="window")
        axes[0].set_xticks(x, labels)
        axes[0].set_title("predicted labels")
        axes[0].legend()
    elif "output.schema_valid_rate" in by_name:
        s = by_name["output.schema_valid_rate"]
        axes[0].bar(["reference", "window"], [s["reference"], s["window"]])
        axes[0].set_title("schema-valid rate")
    if "confidence.distribution" in by_name:
        s = by_name["confidence.distribution"]
        centres = np.linspace(0.05, 0.95, 10)
        for key, label in (("histogram_reference", "reference"), ("histogram_window", "window")):
            counts = np.array(s[key], dtype=float)
            axes[1].plot(centres, counts / max(counts.sum(), 1), marker="o", label=label)
        axes[1].set_title("calibrated confidence")
        axes[1].legend()
    nights = [*history, report]
    scores = [next((s["statistic"] for s in r["signals"] if s["name"] == "input.embedding_mmd"), None) for r in nights]
    axes[2].plot(range(len(nights)), [np.nan if v is None else v for v in scores], marker="o")
    axes[2].set_title("embedding MMD^2, last nights")
    fig.tight_layout()
    image = out / f"{stamp}.png"
    fig.savefig(image, dpi=80)
    plt.close(fig)
    images.append(image.name)

    lines = [f"# Drift of {report['task']} — {stamp}: **{report['verdict']}**", ""]
    lines += [f"- {r}" for r in report["reasons"]] or ["- every test within its threshold"]
    w = report["window"]
    lines += [
        "",
        f"Window: {w['requests']} requests ({w['answered_by_production']} answered by production {report['production']}), "
        f"{w['refused_requests']} refused; skipped: {w['skipped'] or 'none'}.",
        f"Reference: {report['reference']['inputs']} inputs from {report['reference']['source']}.",
        "",
        "| signal | statistic | p-value | corrected |",
        "|---|---|---|---|",
    ]
    for s in report["signals"]:
        p = "-" if s["p_value"] is None else f"{s['p_value']:.3g}"
        corrected = f"{s['p_corrected']:.3g}" if "p_corrected" in s else "-"
        lines.append(f"| {s['name']} | {s['statistic']:.4g} | {p} | {corrected} |")
    q = report["quality"]
    lines += ["", "Estimated quality without labels:"]
    if q.get("confidence_based_accuracy_window") is not None:
        lines.append(
            f"- confidence-based accuracy {q['confidence_based_accuracy_window']:.3f} now, "
            f"{q['confidence_based_accuracy_reference']:.3f} on the reference"
            + (f" (measured at evaluation: {q['accuracy_measured_at_evaluation']:.3f})" if q.get("accuracy_measured_at_evaluation") else "")
        )
    if q.get("teacher_agreement") is None:
        lines.append(f"- agreement with the teacher: unknown ({q.get('teacher_note')})")
    else:
        low, high = q["teacher_agreement_ci95"]
        at_eval = q.get("teacher_agreement_at_evaluation")
        lines.append(
            f"- agreement with the teacher {q['teacher_agreement']:.3f} (95% CI {low:.3f}-{high:.3f}, {q['teacher_sample']} inputs)"
            + (f"; {at_eval:.3f} at evaluation" if at_eval is not None else "")
        )
    lines += [f"- {n}" for n in report["notes"]]
    lines += ["", f"![drift]({images[0]})", ""]
    paths = {"json": str(out / f"{stamp}.json"), "markdown": str(out / f"{stamp}.md"), "plot": str(image)}
    atomic_write_text(paths["json"], json.dumps(report, indent=2, default=float))
    atomic_write_text(paths["markdown"], "\n".join(lines))
    return paths


# -- the pieces that touch models, the registry and the teacher ------------------------------------
def sentence_embedder() -> Callable[[list[str]], np.ndarray]:
    """Texts -> unit-length all-MiniLM-L6-v2 vectors (the deliberate teacher's embedder, offline)."""
    model = load_embedder()
    return lambda texts: model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)


def load_reference(cfg, kind, registry, task: str, ref: str, cache_dir) -> Reference:
    """The production adapter's answers to the task's reference inputs, computed once per version and kept in
    `cache_dir` (a new version gets its own)."""

    cache = Path(cache_dir) / f"reference-{ref.replace('/', '-')}.json"
    eval_metrics = {k: v for k, v in registry.metrics(task, ref).items() if not isinstance(v, dict | list)}
    if cache.exists():
        saved = json.loads(cache.read_text())
        return Reference(ref, saved["source"], saved["inputs"], saved["views"], eval_metrics)
    rows, source = kind.reference_rows(cfg)
    model, tokenizer = load_model(cfg.model)
    adapter = registry.path(task, ref)
    model = activate_adapter(model, adapter, name="production")
    answers = kind.reference_answers(cfg, kind.decoder(cfg, model, tokenizer, adapter), [r.text for r in rows])
    views = [v for v in (kind.drift_view(cfg, a) for a in answers) if v is not None]
    atomic_write_text(cache, json.dumps({"ref": ref, "source": source, "inputs": [r.text for r in rows], "views": views}))
    return Reference(ref, source, [r.text for r in rows], views, eval_metrics)


def ask_teacher(cfg, kind, window: Window, traces_file) -> tuple[tuple[int, int] | None, str | None, float]:
    """The teacher answers up to `drift.teacher_sample` of the window's production answers (within the night's budget,
    cached as traces); return (agreeing, asked) or None with the reason, and the cost. A teacher that is down leaves
    the agreement unknown, never zero."""

    d = cfg.drift
    sample = [(text, view) for text, view in window.answers if text is not None][: d.teacher_sample]
    if not sample:
        return None, "drift.teacher_sample is 0 or no input was kept" if not d.teacher_sample else "no inputs logged", 0.0
    price = price_for(cfg.teacher.model or cfg.teacher.backend, cfg.teacher.prices)
    per_answer = cost_usd(np.mean([len(t) / 3 for t, _ in sample]) + 200, 64, price)  # a rough estimate, to cap the sample
    if per_answer > 0:
        sample = sample[: max(int(d.teacher_budget_usd / per_answer), 0)]
    rows = [Example(f"drift-{i}", text) for i, (text, _) in enumerate(sample)]
    store = TraceStore(traces_file)
    try:
        pool = kind.labeled_rows(cfg)[0] if cfg.teacher.backend == "deliberate" else None
        summary = generate_traces(
            rows, store, lambda: build_teacher(cfg, kind.teacher_task(cfg), pool), prices=cfg.teacher.prices, progress=False
        )
    except TeacherUnavailable as exc:
        return None, f"teacher unavailable: {exc}", 0.0
    finally:
        store.close()

    hits = n = 0
    for text, view in sample:
        trace = store.traces.get(text_sha256(text))
        if trace and not trace.get("error"):
            n += 1
            hits += kind.agrees(cfg, view, trace["output"])
    if n == 0:
        return (
            None,
            f"the teacher answered none of {len(sample)} inputs ({summary.get('failure_reasons') or 'failed'})",
            summary["cost_usd"],
        )
    return (hits, n), None, summary["cost_usd"]
