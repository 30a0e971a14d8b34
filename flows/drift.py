"""The `nightly-drift` flow: every served task's drift over the audit log since the last night; a Prefect event on drift.

`distill-slm deploy` schedules it (cron) and creates, per task, an automation that answers the
event by running that task's `retrain-<task>` deployment with the window's inputs as extra pool:

    nightly-drift --(drift)--> event distill-slm.drift.detected (resource distill-slm.task.<task>)
        --> automation --> retrain-<task> (the `distill` flow, extra_pool = the window's inputs)
        --> train, evaluate, gate, promote --> the service reloads

    from flows.drift import nightly_drift
    nightly_drift(runs_dir="runs", audit_log="runs/.audit/audit.jsonl")
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.events import emit_event

from tasks.drift import drift_check, served_tasks

DRIFT_EVENT = "distill-slm.drift.detected"


def task_resource(task_name: str) -> str:
    return f"distill-slm.task.{task_name}"


@flow(name="nightly-drift")
def nightly_drift(
    runs_dir: str = "runs", audit_log: str = "runs/.audit/audit.jsonl", tasks: list[str] | None = None, now: float | None = None
) -> dict[str, dict]:
    """Check each served task (or `tasks`); a task whose check fails is reported and the others still run."""
    logger = get_run_logger()
    results: dict[str, dict] = {}
    for name in tasks or served_tasks(runs_dir):
        try:
            result = drift_check(runs_dir, audit_log, name, now)
        except Exception as exc:  # noqa: BLE001 (one task's failure must not cost the others their night)
            logger.error("drift check of %s failed: %s: %s", name, type(exc).__name__, exc)
            results[name] = {"verdict": "error", "error": f"{type(exc).__name__}: {exc}"}
            continue
        results[name] = result
        if result["verdict"] == "drift":
            emit_event(
                event=DRIFT_EVENT,
                resource={"prefect.resource.id": task_resource(name), "prefect.resource.name": name},
                payload={"task": name, "inputs": result["inputs"], "report": result["markdown"]},
            )
            logger.info("drift in %s: event %s emitted; the retrain automation takes it from here", name, DRIFT_EVENT)
    return results
