"""The whole demo, timed: `distill` on the embedded creditmix task into a fresh registry.

Targets: wall time < 15 min on a 2-core CPU; SFT macro-F1 >= 0.85 on the balanced eval split and
>= 0.20 above the calibrated base model.

    distill-slm bench demo [--quick] [--json]
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from core.common.config import TaskConfig


def run(quick: bool = False) -> dict:
    from flows.distill import distill

    cfg = TaskConfig()
    # A fresh registry and work dir per run (kept, so its report can be read afterwards).
    out = Path("runs/.bench") / f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    cfg.runs_dir, cfg.work_dir = out / "runs", out / "work"
    if quick:
        cfg.data.train_per_class, cfg.data.eval_per_class = 8, 4
    start = time.perf_counter()
    summary = distill(cfg)
    wall = time.perf_counter() - start
    base, sft = summary["variants"]["base"], summary["variants"]["sft"]
    figures = {
        "wall_s": round(wall, 1),
        "base_macro_f1": round(base["macro_f1"], 4),
        "sft_macro_f1": round(sft["macro_f1"], 4),
        "gain_over_base": round(sft["macro_f1"] - base["macro_f1"], 4),
        "sft_min_class_recall": round(sft["min_class_recall"], 4),
        "promoted": sft["promotion"]["passed"],
        "report": summary["report"],
    }
    figures["target_wall_lt_900s"] = wall < 900
    figures["target_sft_f1_ge_0.85"] = sft["macro_f1"] >= 0.85
    figures["target_gain_ge_0.20"] = figures["gain_over_base"] >= 0.20
    return figures
