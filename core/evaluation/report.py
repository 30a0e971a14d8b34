"""A report a person reads: Markdown tables of every variant side by side, confusion-matrix image."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or CI
import matplotlib.pyplot as plt  # noqa: E402

from core.evaluation.paired import paired_note  # noqa: E402

HEADLINE = [
    "accuracy",
    "macro_f1",
    "macro_f1_ci",
    "min_class_recall",
    "ece",
    "latency_ms_p50",
    "latency_ms_p95",
    "tokens_per_request",
    "cost_per_1k_usd",
    "n",
    "training_rows",
]


def confusion_png(results: dict[str, dict], path: Path) -> Path:
    """One confusion matrix per variant, side by side, rows = gold, columns = predicted."""
    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        matrix = results[name]["confusion_matrix"]
        labels = results[name]["labels"]
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(f"{name}  macro-F1 {results[name]['macro_f1']:.3f}")
        peak = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(value) -> str:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"{value[0]:.3f}-{value[1]:.3f}"  # an interval
    if isinstance(value, float):
        return f"{value:.4g}" if 0 < abs(value) < 0.01 else f"{value:.3f}"
    return str(value)


def _counts(choice: dict) -> str:
    return ", ".join(f"{label} {count}" for label, count in choice["predicted_distribution"].items() if label != "<none>")


def balance_note(metrics: dict) -> str:
    """What the evaluation rows were, said plainly: balanced (how many per class) or not (the counts)."""
    support = {label: c["support"] for label, c in metrics["per_class"].items()}
    if len(set(support.values())) == 1:
        return f"Balanced evaluation: {next(iter(support.values()))} rows per class."
    counts = ", ".join(f"{label} {n}" for label, n in support.items())
    return (
        f"**The evaluation rows are not balanced** ({counts}; a `data.eval` file is used as given). Macro-averaged "
        "figures (macro_f1, min_class_recall) weigh every class equally and hold either way; accuracy does not."
    )


def markdown_report(task: str, results: dict[str, dict], image_name: str = "confusion.png") -> str:
    names = list(results)
    lines = [f"# Evaluation: {task}", "", balance_note(results[names[0]]), ""]
    notes = [f"{n}: {results[n]['latency_note']}" for n in names if results[n].get("latency_note")]
    notes += [f"{n}: cost from {results[n]['cost_basis']}" for n in names if results[n].get("cost_basis")]
    if notes:
        lines += ["Latency and cost: " + "; ".join(notes) + ".", ""]
    lines += ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in HEADLINE:
        lines.append(f"| {key} | " + " | ".join(_fmt(results[n].get(key, "")) for n in names) + " |")
    labels = results[names[0]]["labels"]
    lines += ["", "## Per class (precision / recall)", "", "| class | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label in labels:
        cells = [f"{results[n]['per_class'][label]['precision']:.2f} / {results[n]['per_class'][label]['recall']:.2f}" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Label choice with and without contextual calibration",
        "",
        "| variant | scored with calibration | macro-F1 with | labels with | macro-F1 without | labels without |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        w, wo = results[n].get("with_calibration"), results[n].get("without_calibration")
        if w and wo:
            lines.append(
                f"| {n} | {results[n]['calibrated']} | {w['macro_f1']:.3f} | {_counts(w)} | {wo['macro_f1']:.3f} | {_counts(wo)} |"
            )
    lines += ["", "## Top-2 margin (as scored)", "", "| variant | p10 | p50 | p90 |", "|---|---|---|---|"]
    for n in names:
        m = results[n].get("margin")
        if m:
            lines.append(f"| {n} | {m['p10']:.3f} | {m['p50']:.3f} | {m['p90']:.3f} |")
    if "dpo" in results and "sft" in results:
        lines += dpo_vs_sft(results["sft"], results["dpo"])
    if "selftrain" in results and "sft" in results:
        lines += selftrain_vs_sft(results["sft"], results["selftrain"])
    for n in names:
        if results[n].get("cascade"):
            lines += [
                "",
                f"## Cascade: {n} escalating to the teacher (`/infer/auto`)",
                "",
                "| threshold | escalated | macro-F1 | accuracy | cost per 1k requests (USD) |",
                "|---|---|---|---|---|",
            ]
            for row in results[n]["cascade"]:
                lines.append(
                    f"| {row['threshold']:.2f} | {row['escalation_rate']:.0%} | {row['macro_f1']:.3f} | {row['accuracy']:.3f} "
                    f"| {row['cost_per_1k_usd']:.4g} |"
                )
    lines += ["", f"![confusion matrices]({image_name})", ""]
    return "\n".join(lines)


def selftrain_vs_sft(sft: dict, selftrain: dict) -> list[str]:
    """The gain of self-training over the SFT adapter it started from, whatever its sign, and what the labeler added."""
    delta = selftrain["macro_f1"] - sft["macro_f1"]
    lines = [
        "",
        "## Self-training against the SFT adapter",
        "",
        f"macro-F1 {sft['macro_f1']:.3f} -> {selftrain['macro_f1']:.3f} ({delta:+.3f}).",
    ]
    chosen = selftrain.get("self_training")
    if chosen:
        t = chosen["threshold"]
        if t["threshold"] is None:
            lines.append(f"Nothing was added: {chosen.get('why_none', 'no threshold')}; the retrain saw the gold rows only.")
        else:
            lines.append(
                f"The labeler ({chosen['labeler']}, validation macro-F1 {chosen['labeler_validation_macro_f1']:.3f}) kept "
                f"{chosen['pool_kept']} of {chosen['pool_answers']} pool answers at confidence >= {t['threshold']:.3f}, where its "
                f"validation answers were {t['precision']:.0%} correct (target {chosen['min_precision']:.0%}); per label: "
                + ", ".join(f"{k} {v}" for k, v in chosen["pool_kept_per_label"].items())
                + f". Trained on {chosen['gold_rows']} gold rows plus those."
            )
        choice = chosen.get("labeler_choice")
        if choice:
            lines.append(
                f"The labeler's mode was chosen on the validation rows ({choice['metric']}): "
                + ", ".join(f"{mode} {value:.3f}" for mode, value in choice["validation"].items())
                + f" -> {choice['mode']}."
            )
    return lines


def dpo_vs_sft(sft: dict, dpo: dict, tolerance: float = 0.05) -> list[str]:
    """Macro-F1 change and per-class recall change of DPO over SFT; recall drops beyond `tolerance` are flagged."""
    delta = dpo["macro_f1"] - sft["macro_f1"]
    verdict = "improved" if delta > 0 else "did not improve"
    lines = [
        "",
        "## DPO against the SFT adapter",
        "",
        f"DPO {verdict} macro-F1: {sft['macro_f1']:.3f} -> {dpo['macro_f1']:.3f} ({delta:+.3f}).",
        "",
    ]
    lines += ["| class | SFT recall | DPO recall | change | |", "|---|---|---|---|---|"]
    for label in sft["labels"]:
        before, after = sft["per_class"][label]["recall"], dpo["per_class"][label]["recall"]
        flag = f"**FLAG: recall fell by more than {tolerance}**" if after < before - tolerance else ""
        lines.append(f"| {label} | {before:.3f} | {after:.3f} | {after - before:+.3f} | {flag} |")
    return lines


EXTRACTION_HEADLINE = [
    "schema_valid_rate",
    "field_f1",
    "field_precision",
    "field_recall",
    "exact_match",
    "corrections_per_doc",
    "latency_ms_p50",
    "latency_ms_p95",
    "tokens_per_request",
    "cost_per_1k_usd",
    "n",
]


def extraction_report(task: str, results: dict[str, dict]) -> str:
    """Variants side by side on the eval documents: validity, field-level F1, correction effort, cost; accuracy per field."""
    names = list(results)
    lines = [
        f"# Evaluation: {task} (document -> JSON)",
        "",
        "Fields are leaf paths (`vendor.name`, `items[0].price`); numbers compared to 2 decimals, dates as dates, "
        "strings trimmed and case-folded. Corrections = wrong + missing + extra fields per document.",
        "",
    ]
    lines += ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in EXTRACTION_HEADLINE:
        lines.append(f"| {key} | " + " | ".join(_fmt(results[n].get(key, "")) for n in names) + " |")
    fields = sorted({f for n in names for f in results[n].get("field_accuracy", {})})
    lines += ["", "## Accuracy per field", "", "| field | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for f in fields:
        lines.append(f"| {f} | " + " | ".join(_fmt(results[n].get("field_accuracy", {}).get(f, "")) for n in names) + " |")
    return "\n".join(lines) + "\n"


def write_classification_report(task: str, results: dict[str, dict], out_dir: Path) -> Path:
    """`report.md` and `confusion.png` under `out_dir`."""
    confusion_png(results, out_dir / "confusion.png")
    return _write(out_dir / "report.md", markdown_report(task, results))


def write_extraction_report(task: str, results: dict[str, dict], out_dir: Path) -> Path:
    return _write(out_dir / "report.md", extraction_report(task, results))


TEXT_HEADLINE = ["chrf", "exact_match", "length_ratio", "latency_ms_p50", "latency_ms_p95", "tokens_per_request", "cost_per_1k_usd", "n"]


def text_report(task: str, results: dict[str, dict], examples: int = 3) -> str:
    """Variants side by side on the eval rows (free-text answers): chrF, exact match, answer length, latency and cost;
    then a few rows as each variant answered them, for a person to read."""
    names = list(results)
    lines = [
        f"# Evaluation: {task} (free-text answers)",
        "",
        "chrF: character 1- to 6-gram F-score against the reference answer (recall weighted 2x), mean over rows; "
        "length_ratio: answer characters over reference characters.",
        "",
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key in TEXT_HEADLINE:
        lines.append(f"| {key} | " + " | ".join(_fmt(results[n].get(key, "")) for n in names) + " |")
    lines += ["", "## Answers to the first rows", ""]
    for i in range(min(examples, min((len(results[n].get("predictions", [])) for n in names), default=0))):
        lines.append(f"- row `{results[names[0]]['predictions'][i]['id']}`")
        lines += [f"  - {n}: {results[n]['predictions'][i]['output'][:200]!r}" for n in names]
    return "\n".join(lines) + "\n"


def write_text_report(task: str, results: dict[str, dict], out_dir: Path) -> Path:
    return _write(out_dir / "report.md", text_report(task, results))


CODEGEN_HEADLINE = [
    "pass_at_1",
    "pass_at_2",
    "verified_rate",
    "syntax_rate",
    "lint_pass_rate",
    "latency_ms_p50",
    "latency_ms_p95",
    "tokens_per_request",
    "cost_per_1k_usd",
    "n",
]
CAUSES = ("syntax", "assertion", "timeout", "crash", "output", "incomplete", "failed")


def codegen_report(task: str, results: dict[str, dict], image_name: str = "pass_rates.png") -> str:
    """Variants side by side on the eval tasks: pass rates, syntax and lint, latency and cost; failures by cause."""
    names = list(results)
    lines = [
        f"# Evaluation: {task} (spec -> plan and code, run against tests)",
        "",
        "pass@1: the greedy answer passes every test in the sandbox. pass@k: the unbiased estimator over sampled answers "
        "(`codegen.samples`). The teacher's pass@1 is its first (greedy) candidate's; `verified_rate` is the share of tasks "
        "any of its candidates solved (what KD may learn from). Lint: ruff, rules E and F without E501.",
        "",
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    keys = [k for k in CODEGEN_HEADLINE if any(k in results[n] for n in names)]
    keys += sorted({k for n in names for k in results[n] if k.startswith("pass_at_") and k not in keys})
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_fmt(results[n].get(key, "")) for n in names) + " |")
    lines += ["", "## Failures by cause (greedy answers)", "", "| cause | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for cause in [c for c in CAUSES if any(results[n].get("failures", {}).get(c) for n in names)]:
        lines.append(f"| {cause} | " + " | ".join(str(results[n].get("failures", {}).get(cause, 0)) for n in names) + " |")
    return "\n".join(lines + ["", f"![pass rates]({image_name})", ""])


def pass_rates_png(results: dict[str, dict], path: Path) -> Path:
    """pass@1, syntax rate and lint pass rate of each variant as grouped bars."""
    names, keys = list(results), ("pass_at_1", "syntax_rate", "lint_pass_rate")
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(names), 3.5))
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        values = [results[n].get(key, 0.0) for n in names]
        bars = ax.bar([x + i * width for x in range(len(names))], values, width, label=key)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks([x + width for x in range(len(names))], names)
    ax.set_ylim(0, 1.3)  # room above the bars for the legend
    ax.legend(fontsize=8, loc="upper center", ncol=len(keys))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_codegen_report(task: str, results: dict[str, dict], out_dir: Path) -> Path:
    """`report.md` and `pass_rates.png` under `out_dir`."""
    pass_rates_png(results, out_dir / "pass_rates.png")
    return _write(out_dir / "report.md", codegen_report(task, results))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def validation_resolution(value: float, rows: int) -> float:
    """Half-width of a 95% interval of a proportion `value` measured on `rows` rows (normal approximation): below it, two
    steps' scores on the same validation rows are not told apart by them. A rough scale for macro-F1 too."""
    return 1.96 * math.sqrt(max(value * (1 - value), 1 / rows) / rows)


def _resolution(curve: dict, best: dict) -> str:
    """What the validation rows could decide: their count, the kept score's +/- and the other steps within it."""
    rows = curve.get("rows")
    if not rows:
        return ""
    half = validation_resolution(best["value"], rows)
    close = [p["step"] for p in curve["curve"] if p is not best and best["value"] - p["value"] < half]
    said = f"; on {rows} validation rows +/-{half:.2f} (95%)"
    if close:
        said += f": steps {', '.join(map(str, close))} are as good on these rows (the pick among them is their draw)"
    return said


def add_learning_curves(report: Path, curves: dict[str, dict]) -> Path | None:
    """Append each adapter's validation curve (`learning_curve.json`: metric per evaluation step) to the report, as a plot
    (`learning_curve.png` beside it) and a table; return the plot's path, None when no adapter kept a curve."""
    curves = {name: c for name, c in curves.items() if c and c.get("curve")}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, c in curves.items():
        ax.plot([p["step"] for p in c["curve"]], [p["value"] for p in c["curve"]], marker="o", label=name)
    metric = next(iter(curves.values()))["metric"]
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"validation {metric}")
    ax.legend()
    fig.tight_layout()
    image = report.parent / "learning_curve.png"
    fig.savefig(image, dpi=110)
    plt.close(fig)
    lines = ["", "## Learning curves (validation split, held out of the training rows)", ""]
    for name, c in curves.items():
        best = max(c["curve"], key=lambda p: (p["value"], -p["step"]))
        points = ", ".join(f"{p['step']}: {p['value']:.3f}" for p in c["curve"])
        lines.append(f"- {name}: {metric} by step {points}; kept step {best['step']} ({best['value']:.3f}){_resolution(c, best)}")
    lines += ["", f"![learning curves]({image.name})", ""]
    with open(report, "a", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return image


def add_paired_gains(report: Path, results: dict[str, dict]) -> None:
    """Append each adapter's gain over the run's SFT adapter with its paired interval (`core.evaluation.paired`), and
    what the gate makes of it; nothing when no adapter was compared."""
    compared = {name: metrics for name, metrics in results.items() if metrics.get("paired")}
    if not compared:
        return
    lines = ["", "## Gains over SFT on the same rows (paired bootstrap)", ""]
    lines += [f"- {paired_note(name, metrics)}" for name, metrics in compared.items()]
    lines += ["", "A gain within the draw of the rows does not displace the SFT adapter at promotion.", ""]
    with open(report, "a", encoding="utf-8") as f:
        f.write("\n".join(lines))


def add_openai_graders(report: Path, results: dict[str, dict], unsupported: list[str]) -> None:
    """Append the imported OpenAI eval's graders, each variant's pass rate and mean score, and the graders not run."""
    names = sorted({g for metrics in results.values() for g in metrics.get("openai_graders", {})})
    lines = ["", "## OpenAI eval graders", ""]
    if names:
        lines += ["| variant | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for variant, metrics in results.items():
            graded = metrics.get("openai_graders", {})
            cells = [_grader_cell(graded.get(n)) for n in names]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    not_run = {n: g["not_run"] for metrics in results.values() for n, g in metrics.get("openai_graders", {}).items() if "not_run" in g}
    lines += ["", *(f"Not run: {name}: {why}." for name, why in sorted(not_run.items()))]
    lines.append("Not supported (need a scoring model or code): " + (", ".join(unsupported) if unsupported else "none") + ".")
    with report.open("a") as f:
        f.write("\n".join(lines) + "\n")


def _grader_cell(graded: dict | None) -> str:
    if graded is None:
        return "-"
    if "not_run" in graded:
        return "not run"
    ungraded = f", {graded['ungraded']} ungraded" if graded.get("ungraded") else ""
    return f"{graded['pass_rate']:.3f} pass ({graded['mean_score']:.3f}){ungraded}"
