"""evaluate: base and candidates side by side on the eval split; metrics, report, artifacts."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from core.common.config import TaskConfig
from core.evaluation.cost import add_cost, price_for
from core.evaluation.evaluate import cascade_table
from core.evaluation.report import add_learning_curves
from core.kinds import kind_of
from core.teachers.traces import TraceStore
from tasks.artifacts import artifact_key


@task(name="evaluate")
def evaluate_task(cfg: TaskConfig, eval_path: str, adapters: dict[str, str], out_dir: str, teacher_traces_file: str | None = None) -> str:
    """Write `<out_dir>/<variant>.metrics.json` and the report; return out_dir.

    With `teacher_traces_file` (the teacher's traces on the eval rows) the teacher joins the table.
    """
    kind = kind_of(cfg)
    rows = kind.load_rows(cfg, eval_path)
    results = kind.evaluate(cfg, rows, adapters)
    for metrics in results.values():
        add_cost(metrics, cfg)
    for name, folder in adapters.items():
        stats = Path(folder) / "train_stats.json"
        if stats.exists():  # the report says how many rows each adapter learned from
            results[name]["training_rows"] = json.loads(stats.read_text()).get("distinct_rows")
        chosen = Path(folder) / "self_training.json"
        if chosen.exists():  # what the labeler added, for the report's self-training section
            results[name]["self_training"] = json.loads(chosen.read_text())
    if teacher_traces_file:
        teacher = kind.teacher_metrics(cfg, rows, TraceStore.read(teacher_traces_file).traces)
        add_cost(teacher, cfg, price_for(teacher["teacher"], cfg.teacher.prices))
        if kind.escalates:
            for name in adapters:
                results[name]["cascade"] = cascade_table(cfg, results[name], teacher)
        results = {"base": results.pop("base"), "teacher": teacher} | results
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, metrics in results.items():
        (out / f"{name}.metrics.json").write_text(json.dumps(metrics, indent=2))
    report = kind.write_report(cfg.name, results, out)
    curves = {name: _curve(Path(folder)) for name, folder in adapters.items()}
    if add_learning_curves(report, curves):
        create_table_artifact(
            key=artifact_key(cfg.name, "learning-curve"),
            table=[{"adapter": name, **point} for name, c in curves.items() if c for point in c["curve"]],
            description=f"validation {cfg.promotion.primary_metric} per evaluation step",
        )
    create_markdown_artifact(key=artifact_key(cfg.name, "evaluation"), markdown=report.read_text(), description="evaluation")
    create_table_artifact(
        key=artifact_key(cfg.name, "leaderboard"),
        table=[{"variant": name} | {k: results[name].get(k) for k in (*kind.summary_keys, "n")} for name in results],
    )
    return str(out)


def _curve(adapter_dir: Path) -> dict | None:
    path = adapter_dir / "learning_curve.json"
    return json.loads(path.read_text()) if path.exists() else None
