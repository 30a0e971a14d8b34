"""evaluate: base and candidates side by side on the eval split (`core.scorecard`), published as Prefect artifacts."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from core.common.config import TaskConfig
from core.kinds import for_config
from core.kinds.data import load_rows
from core.scorecard import evaluate_run
from core.settings import ModelSettings
from core.teachers.traces import TraceStore
from tasks.artifacts import artifact_key


@task(name="evaluate")
def evaluate_task(cfg: TaskConfig, eval_path: str, adapters: dict[str, str], out_dir: str, teacher_traces_file: str | None = None) -> str:
    """Write `<out_dir>/<variant>.metrics.json` and the report; return out_dir.

    With `teacher_traces_file` (the teacher's traces on the eval rows) the teacher joins the table.
    """
    kind = for_config(cfg, ModelSettings())  # the operator's settings, on the machine this task runs on
    teacher = TraceStore.read(teacher_traces_file).traces if teacher_traces_file else None
    card = evaluate_run(kind, load_rows(kind, eval_path), adapters, out_dir, teacher)
    if any(c and c.get("curve") for c in card.curves.values()):
        create_table_artifact(
            key=artifact_key(cfg.name, "learning-curve"),
            table=[{"adapter": name, **point} for name, c in card.curves.items() if c for point in c.get("curve", [])],
            description=f"validation {cfg.promotion.primary_metric} per evaluation step",
        )
    create_markdown_artifact(key=artifact_key(cfg.name, "evaluation"), markdown=card.report.read_text(), description="evaluation")
    create_table_artifact(
        key=artifact_key(cfg.name, "leaderboard"),
        table=[{"variant": name} | {k: metrics.get(k) for k in (*kind.summary_keys, "n")} for name, metrics in card.results.items()],
    )
    return str(card.out_dir)
