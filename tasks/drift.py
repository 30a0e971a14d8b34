"""drift_check: one served task's drift over an audit-log window (see `core.drift`); report, artifacts, window inputs."""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from core.common.files import atomic_write_text, write_jsonl
from core.common.rows import Example
from core.drift.report import write_report
from core.drift.sources import ask_teacher, load_reference, sentence_embedder
from core.drift.verdict import assess
from core.drift.windows import Window
from core.errors import RegistryError
from core.kinds import for_config, task_teacher
from core.kinds.data import reference_rows
from core.registry import Registry
from core.serving.audit import iter_audit
from core.settings import ModelSettings
from tasks.artifacts import artifact_key

HISTORY_NIGHTS = 14  # earlier reports drawn in the embedding-score plot


def served_tasks(runs_dir: str | Path) -> list[str]:
    """Tasks with a production version: what the service answers with, so what drift watches."""
    registry = Registry(runs_dir)
    return [t for t in registry.tasks() if registry.aliases(t).get("production")]


def drift_dir(runs_dir: str | Path, task_name: str) -> Path:
    return Path(runs_dir) / task_name / "drift"


@task(name="drift_check")
def drift_check(runs_dir: str, audit_log: str, task_name: str, now: float | None = None, embed: bool = True) -> dict:
    """Drift of `task_name` over the audit records since the last check (at most `drift.window_hours`), against its
    production adapter's reference. Writes `runs/<task>/drift/<stamp>.{json,md,png}` and the window's inputs (the
    retrain's pool); returns the report's verdict and paths. One bad record never fails the night: it is counted."""
    logger = get_run_logger()
    registry = Registry(runs_dir)
    production = registry.aliases(task_name).get("production") if task_name in registry.tasks() else None
    if production is None:
        raise RegistryError(f"task {task_name!r} has no production version in {runs_dir}: nothing is served to check")
    cfg = registry.task_config(task_name, production)
    settings = ModelSettings()  # the operator's, on the machine this task runs on
    kind = for_config(cfg, settings)
    out = drift_dir(runs_dir, task_name)
    state_path = out / "state.json"
    now = time.time() if now is None else now
    last = json.loads(state_path.read_text())["until"] if state_path.exists() else None
    since = max(last or 0.0, now - cfg.drift.window_hours * 3600)
    registered = {f"{m}/{v}" for m in registry.methods(task_name) for v in registry.versions(task_name, m)}
    window = Window(task_name, production, lambda r: kind.drift_view(r), cfg.drift.sample_size, registered)
    skipped: Counter = Counter()
    for record in iter_audit(audit_log, since=since, until=now, skipped=skipped):
        try:
            window.observe(record)
        except (KeyError, TypeError, ValueError) as exc:  # a record of another shape: counted, never fatal
            window.skipped[f"malformed record ({type(exc).__name__})"] += 1
    window.skipped.update(skipped)
    reference = load_reference(cfg, kind, registry, task_name, production, out, lambda: reference_rows(kind))
    embedder = None
    if embed and window.inputs:
        embedder = sentence_embedder()
    agreement, note, cost = (None, "window below drift.min_requests", 0.0)
    if window.requests >= cfg.drift.min_requests:
        agreement, note, cost = ask_teacher(
            cfg, kind, window, out / "traces" / f"{cfg.teacher.backend}.jsonl", lambda: task_teacher(cfg, settings)
        )
    report = assess(cfg, kind, reference, window, embedder, agreement, note)
    report["window"] |= {"since": since, "until": now}
    report["quality"]["teacher_cost_usd"] = cost
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H%M%S")
    history = [json.loads(p.read_text()) for p in sorted(out.glob("20*.json"))[-HISTORY_NIGHTS:]]
    paths = write_report(report, history, out, stamp)
    inputs_path = out / f"{stamp}.inputs.jsonl"
    write_jsonl(inputs_path, [kind.to_record(_row(i, text)) for i, text in enumerate(window.inputs)])
    atomic_write_text(state_path, json.dumps({"until": now, "last_report": paths["json"]}))
    logger.info("drift of %s over %d requests: %s %s", task_name, window.requests, report["verdict"], "; ".join(report["reasons"]) or "")
    create_markdown_artifact(key=artifact_key(task_name, "drift"), markdown=Path(paths["markdown"]).read_text(), description="drift")
    create_table_artifact(
        key=artifact_key(task_name, "drift-signals"),
        table=[{k: s.get(k) for k in ("name", "statistic", "p_value", "p_corrected")} for s in report["signals"]],
    )
    checked_on = f"{socket.gethostname()}/{os.getpid()}"  # which machine and process checked it (a Ray worker's, on a cluster)
    return {"task": task_name, "verdict": report["verdict"], "inputs": str(inputs_path), "checked_on": checked_on, **paths}


def _row(i: int, text: str) -> Example:
    return Example(f"drift-{i:05d}", text)
