"""The `nightly-drift` flow: every served task's drift over the audit log since the last night; a Prefect event on drift.

`distill-slm deploy` schedules it (cron) and creates, per task, an automation that answers the
event by running that task's `retrain-<task>` deployment with the window's inputs as extra pool:

    nightly-drift --(drift)--> event distill-slm.drift.detected (resource distill-slm.task.<task>)
        --> automation --> retrain-<task> (the `distill` flow, extra_pool = the window's inputs)
        --> train, evaluate, gate, promote --> the service reloads

    from flows.drift import nightly_drift
    nightly_drift(runs_dir="runs", audit_log="runs/.audit/audit.jsonl")
    nightly_drift(..., ray_address="10.0.0.5:6379")   # one task per worker of a Ray cluster, side by side
    nightly_drift(..., dask_address="tcp://10.0.0.5:8786")   # or of a Dask scheduler's workers

On a cluster (prefect-ray's or prefect-dask's task runner, the `scale` extra) every worker must mount the registry and the audit log at the
same paths (docs/cluster.md); each check loads its own production adapter there.
"""

from __future__ import annotations

from collections.abc import Callable

from prefect import flow, get_run_logger
from prefect.events import emit_event

from core.errors import ConfigError
from flows.runners import cluster_runner
from tasks.drift import drift_check, served_tasks

DRIFT_EVENT = "distill-slm.drift.detected"


def task_resource(task_name: str) -> str:
    return f"distill-slm.task.{task_name}"


@flow(name="nightly-drift")
def nightly_drift(
    runs_dir: str = "runs",
    audit_log: str = "runs/.audit/audit.jsonl",
    tasks: list[str] | None = None,
    now: float | None = None,
    ray_address: str | None = None,
    dask_address: str | None = None,
) -> dict[str, dict]:
    """Check each served task (or `tasks`); a task whose check fails is reported and the others still run.
    `ray_address` / `dask_address`: check the tasks side by side, one per worker of that Ray cluster or Dask scheduler;
    neither: one after another here."""
    logger = get_run_logger()
    names = tasks or served_tasks(runs_dir)
    if ray_address and dask_address:
        raise ConfigError("ray_address, dask_address: one cluster or the other, not both")
    if ray_address or dask_address:
        runner = cluster_runner("ray", ray_address, "ray_address") if ray_address else cluster_runner("dask", dask_address, "dask_address")
        results = drift_checks.with_options(task_runner=runner)(runs_dir, audit_log, names, now)
    else:
        results = {name: _checked(name, lambda name=name: drift_check(runs_dir, audit_log, name, now)) for name in names}
    for name, result in results.items():
        if result["verdict"] == "drift":
            emit_event(
                event=DRIFT_EVENT,
                resource={"prefect.resource.id": task_resource(name), "prefect.resource.name": name},
                payload={"task": name, "inputs": result["inputs"], "report": result["markdown"]},
            )
            logger.info("drift in %s: event %s emitted; the retrain automation takes it from here", name, DRIFT_EVENT)
    return results


@flow(name="nightly-drift-checks")
def drift_checks(runs_dir: str, audit_log: str, names: list[str], now: float | None = None) -> dict[str, dict]:
    """Every task's check submitted at once to this flow's task runner (a cluster: one task per worker), then collected."""
    futures = {name: drift_check.submit(runs_dir, audit_log, name, now) for name in names}
    return {name: _checked(name, future.result) for name, future in futures.items()}


def _checked(name: str, check: Callable[[], dict]) -> dict:
    """One task's check; its failure is reported as that task's verdict, never the night's end."""
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 (one task's failure must not cost the others their night)
        get_run_logger().error("drift check of %s failed: %s: %s", name, type(exc).__name__, exc)
        return {"verdict": "error", "error": f"{type(exc).__name__}: {exc}"}
