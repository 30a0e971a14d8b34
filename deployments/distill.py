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

To run flows elsewhere, register the same deployments against a work pool instead of serving them
here (`prefect work-pool create loop --type process`, `flow.deploy(..., work_pool_name="loop")`,
`prefect worker start --pool loop` on the machine that trains); the README shows the commands.
"""

from __future__ import annotations

from prefect import serve as prefect_serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from core.common.config import TaskConfig
from core.settings import ServiceSettings
from flows.distill import distill
from flows.drift import DRIFT_EVENT, nightly_drift, task_resource

NIGHTLY = "0 2 * * *"


def retrain_name(cfg: TaskConfig) -> str:
    return f"retrain-{cfg.name}"


def build(
    configs: list[TaskConfig], cron: str = NIGHTLY, timezone: str = "UTC", settings: ServiceSettings | None = None
) -> list[RunnerDeployment]:
    """One retrain deployment per task file (with its drift trigger) and the nightly drift check over the service's log."""
    s = settings or ServiceSettings()
    deployments = [
        distill.to_deployment(
            name=retrain_name(cfg),
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
            parameters={"runs_dir": str(s.runs_dir), "audit_log": str(s.audit_log)},
            tags=["drift"],
            description="Every served task's drift over the audit log since the last run; drift starts its retrain.",
        )
    )
    return deployments


def serve(configs: list[TaskConfig], cron: str = NIGHTLY, timezone: str = "UTC") -> None:
    """Register the deployments (and their automations) and run them from this process until interrupted."""
    prefect_serve(*build(configs, cron, timezone))
