"""The drift report: JSON, markdown and the history plot, published whole."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np

from core.common.files import atomic_write_text

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402


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
