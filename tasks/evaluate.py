"""evaluate: base and candidates side by side on the balanced eval split; metrics, report, artifacts."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from core.config import TaskConfig
from core.data import load_rows
from core.evaluate import add_cost, cascade_table, evaluate_variants, teacher_metrics
from core.traces import TraceStore, price_for
from core.report import HEADLINE, write_report


@task(name="evaluate")
def evaluate_task(
    cfg: TaskConfig, eval_path: str, adapters: dict[str, str], out_dir: str, teacher_traces_file: str | None = None
) -> str:
    """Write `<out_dir>/<variant>.metrics.json`, `report.md` and `confusion.png`; return out_dir.

    With `teacher_traces_file` (the teacher's traces on the eval rows) the teacher joins the table.
    """
    rows = load_rows(cfg, eval_path)
    results = evaluate_variants(cfg, rows, adapters)
    for metrics in results.values():
        add_cost(metrics, cfg)
    if teacher_traces_file:
        store = TraceStore(teacher_traces_file)
        store.close()
        teacher = teacher_metrics(cfg, rows, store.traces)
        add_cost(teacher, cfg, price_for(teacher["teacher"], cfg.teacher.prices))
        if cfg.type == "classification":  # escalation needs a calibrated confidence
            for name in adapters:
                results[name]["cascade"] = cascade_table(cfg, results[name], teacher)
        results = {"base": results.pop("base"), "teacher": teacher} | results
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, metrics in results.items():
        (out / f"{name}.metrics.json").write_text(json.dumps(metrics, indent=2))
    report = write_report(cfg.name, results, out)
    create_markdown_artifact(key=f"{cfg.name}-evaluation", markdown=report.read_text(), description="balanced evaluation")
    create_table_artifact(
        key=f"{cfg.name}-leaderboard",
        table=[{"variant": name} | {k: results[name].get(k) for k in HEADLINE} for name in results],
    )
    return str(out)
