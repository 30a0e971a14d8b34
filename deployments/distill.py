"""The deployments that close the loop: `retrain-<task>` per task file, `nightly-drift`, and the drift automation.

- `retrain-<task>`: the `distill` flow with the task file as its default parameters. The Prefect UI
  renders `cfg` (a pydantic `TaskConfig`) as a validated form: a retrain starts from "Run" there.
  Its trigger is the drift automation: the event `distill-slm.drift.detected` about
  `distill-slm.task.<task>` runs it with `extra_pool` = the drifted window's inputs.
- `nightly-drift`: the `nightly-drift` flow on a cron schedule (default 02:00, `--timezone`).

Both need a running Prefect server (the temporary one `distill-slm run` starts lives only as long
as its run, and cannot run schedules):

    prefect server start &                                   # SQLite by default (UI at http://127.0.0.1:4200)
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    distill-slm deploy examples/creditmix.yaml               # registers and serves them until interrupted

Or on a work pool, run by workers wherever they are (`deploy_to_pool`): the deployments name the flows by module
(`flows.distill.distill`), so a worker runs them from its installed distill-slm, and the task files must name a
registry every worker shares (absolute `runs_dir` and `work_dir`):

    prefect work-pool create loop --type process             # or kubernetes: deployments/kubernetes-gpu-job.json
    distill-slm deploy examples/creditmix.yaml --work-pool loop
    prefect worker start --pool loop                         # on every machine that trains

Each retrain deployment has a concurrency limit of 1: a second run of one task waits for the first (Prefect
queues it) while other tasks' retrains run side by side on other workers.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from prefect import serve as prefect_serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.exceptions import ObjectNotFound
from prefect.schedules import Cron

from core.common.config import TaskConfig
from core.errors import ConfigError
from core.settings import ServiceSettings
from flows.distill import distill
from flows.drift import DRIFT_EVENT, nightly_drift, task_resource

NIGHTLY = "0 2 * * *"
# One run of a task at a time; another waits its turn (ENQUEUE) rather than failing on the task's run lock.
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def retrain_name(cfg: TaskConfig) -> str:
    return f"retrain-{cfg.name}"


def build(
    configs: list[TaskConfig],
    cron: str = NIGHTLY,
    timezone: str = "UTC",
    settings: ServiceSettings | None = None,
    entrypoint_type: EntrypointType = EntrypointType.FILE_PATH,
    ray_address: str | None = None,
    dask_address: str | None = None,
) -> list[RunnerDeployment]:
    """One retrain deployment per task file (with its drift trigger) and the nightly drift check over the service's log.
    `entrypoint_type` MODULE_PATH: the flows are named by module, for workers that import them from the installed
    package (a work pool). `ray_address` / `dask_address`: the nightly checks run side by side on that Ray cluster's or
    Dask scheduler's workers."""
    cluster = {k: v for k, v in (("ray_address", ray_address), ("dask_address", dask_address)) if v}
    s = settings or ServiceSettings()
    deployments = [
        distill.to_deployment(
            name=retrain_name(cfg),
            concurrency_limit=ONE_AT_A_TIME,
            entrypoint_type=entrypoint_type,
            parameters={"cfg": cfg.model_dump(mode="json")},
            tags=[cfg.name, "retrain"],
            description=f"Retrain {cfg.name}: train, evaluate, gate, promote, reload the service. Started from this form or by drift.",
            triggers=[
                DeploymentEventTrigger(
                    name=f"drift-retrains-{cfg.name}",
                    description=f"a nightly drift check of {cfg.name} said drift: retrain on the drifted traffic",
                    expect={DRIFT_EVENT},
                    match={"prefect.resource.id": task_resource(cfg.name)},
                    parameters={"extra_pool": "{{ event.payload.inputs }}"},
                )
            ],
        )
        for cfg in configs
    ]
    deployments.append(
        nightly_drift.to_deployment(
            name="nightly-drift",
            schedule=Cron(cron, timezone=timezone),
            concurrency_limit=ONE_AT_A_TIME,
            entrypoint_type=entrypoint_type,
            parameters={"runs_dir": str(s.runs_dir), "audit_log": str(s.audit_log)} | cluster,
            tags=["drift"],
            description="Every served task's drift over the audit log since the last run; drift starts its retrain.",
        )
    )
    return deployments


def serve(
    configs: list[TaskConfig], cron: str = NIGHTLY, timezone: str = "UTC", ray_address: str | None = None, dask_address: str | None = None
) -> None:
    """Register the deployments (and their automations) and run them from this process until interrupted."""
    prefect_serve(*build(configs, cron, timezone, ray_address=ray_address, dask_address=dask_address))


def deploy_to_pool(
    configs: list[TaskConfig],
    work_pool: str,
    cron: str = NIGHTLY,
    timezone: str = "UTC",
    settings: ServiceSettings | None = None,
    ray_address: str | None = None,
    dask_address: str | None = None,
) -> list[UUID]:
    """Register the deployments (and their automations) on `work_pool`, for its workers to run; return their ids.

    Refused before anything is registered: a pool the server does not know (naming it), and a task file whose registry
    or scratch folder is relative (a worker on another machine would resolve it against its own folder: a registry the
    service and the other workers never see), as are relative drift paths."""
    s = settings or ServiceSettings()
    for cfg in configs:
        for field in ("runs_dir", "work_dir"):
            if not Path(getattr(cfg, field)).is_absolute():
                raise ConfigError(
                    f"task {cfg.name!r}: {field} {str(getattr(cfg, field))!r} is relative; on a work pool every worker must "
                    f"reach the same registry: give a path on storage they all mount"
                )
    for name, path in (("DISTILL_SLM_RUNS_DIR", s.runs_dir), ("DISTILL_SLM_AUDIT_LOG", s.audit_log)):
        if not Path(path).is_absolute():
            raise ConfigError(f"{name} {str(path)!r} is relative; the nightly drift check runs on a worker: give a shared absolute path")
    # `prefect.deploy` would do the same, but it first lists the pool's workers with a request Prefect 3.8's server refuses
    # (422: limit None); the pool check and `apply` are all it needs for a process or Kubernetes pool without an image.
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(work_pool)
        except ObjectNotFound:
            raise ConfigError(
                f"--work-pool: the Prefect server has no work pool {work_pool!r}; create it first: "
                f"prefect work-pool create {work_pool} --type process"
            ) from None
    deployments = build(
        configs, cron, timezone, s, entrypoint_type=EntrypointType.MODULE_PATH, ray_address=ray_address, dask_address=dask_address
    )
    return [d.apply(work_pool_name=work_pool) for d in deployments]
