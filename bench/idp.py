"""Document extraction on the invoices demo: the constrained base model vs the SFT student.

Both decode under the task's JSON Schema (XGrammar); the student is a LoRA adapter trained on the
gold JSON of the training documents. Targets: 100% schema-valid outputs from every variant, and
a student field-level F1 >= 0.90 that is >= 0.25 above the constrained base model.

    distill-slm bench idp [--quick] [--json]

The adapter is cached under runs/.bench/idp/: a second run only evaluates.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from core.config import TaskConfig
from core.data import labeled_rows, split_rows
from core.evaluate import add_cost, evaluate_variants
from core.report import write_report
from core.sft import train_sft

KEYS = ("schema_valid_rate", "field_f1", "field_precision", "field_recall", "exact_match", "corrections_per_doc",
        "latency_ms_p50", "latency_ms_p95", "completion_tokens_per_request", "cost_per_1k_usd")


def run(quick: bool = False) -> dict:
    cfg = TaskConfig(type="idp")
    work = Path("runs/.bench") / ("idp-quick" if quick else "idp")
    if quick:
        cfg.data.train_per_class, cfg.data.eval_per_class, cfg.training.max_steps = 16, 4, 2
    rows, source = labeled_rows(cfg)
    train_rows, eval_rows = split_rows(cfg, rows)
    adapter = work / "sft-adapter"
    figures: dict = {"source": source, "train_documents": len(train_rows), "eval_documents": len(eval_rows)}
    if not (adapter / "train_stats.json").exists():
        start = time.perf_counter()
        _, stats = train_sft(cfg, train_rows, work / "sft-checkpoints", adapter)
        (adapter / "train_stats.json").write_text(json.dumps(asdict(stats)))
        print(f"SFT: {stats.steps} steps in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    figures["sft_training"] = json.loads((adapter / "train_stats.json").read_text())
    results = evaluate_variants(cfg, eval_rows, {"sft": adapter})
    for metrics in results.values():
        add_cost(metrics, cfg)
    figures["report"] = str(write_report(cfg.name, results, work / "eval"))
    for name, metrics in results.items():
        figures[name] = {k: round(metrics[k], 4) for k in KEYS}
        figures[name]["field_accuracy"] = metrics["field_accuracy"]
    base, sft = results["base"], results["sft"]
    figures["sft_gain_over_base"] = round(sft["field_f1"] - base["field_f1"], 4)
    figures["target_all_valid"] = all(m["schema_valid_rate"] == 1.0 for m in results.values())
    figures["target_student_f1_ge_0.90"] = sft["field_f1"] >= 0.90
    figures["target_gain_ge_0.25"] = figures["sft_gain_over_base"] >= 0.25
    return figures
