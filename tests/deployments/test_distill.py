"""The loop's deployments as built (registering and running them against a real server: tests/flows/test_drift.py)."""

from __future__ import annotations

from core.common.config import TaskConfig
from core.settings import ServiceSettings
from deployments.distill import build
from flows.drift import DRIFT_EVENT, task_resource


def test_one_retrain_per_task_triggered_by_its_own_drift_and_one_nightly_check(tmp_path):
    configs = [TaskConfig(name="creditmix"), TaskConfig(name="invoices", type="idp")]
    settings = ServiceSettings(runs_dir=tmp_path / "runs", audit_log=tmp_path / "audit.jsonl")
    retrains = {d.name: d for d in build(configs, cron="30 3 * * *", timezone="Europe/Paris", settings=settings)}
    nightly = retrains.pop("nightly-drift")
    assert sorted(retrains) == ["retrain-creditmix", "retrain-invoices"]
    for cfg in configs:
        deployment = retrains[f"retrain-{cfg.name}"]
        assert TaskConfig.model_validate(deployment.parameters["cfg"]) == cfg  # the task file is the form's default
        [trigger] = deployment.triggers
        assert trigger.expect == {DRIFT_EVENT} and trigger.match.model_dump()["prefect.resource.id"] == task_resource(cfg.name)
        assert trigger.parameters == {"extra_pool": "{{ event.payload.inputs }}"}  # the drifted inputs join the pool
    [schedule] = nightly.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 3 * * *", "Europe/Paris")
    assert nightly.parameters == {"runs_dir": str(tmp_path / "runs"), "audit_log": str(tmp_path / "audit.jsonl")}


def test_with_a_cluster_address_the_nightly_check_runs_on_that_cluster():
    [nightly] = [d for d in build([], ray_address="10.0.0.5:6379") if d.name == "nightly-drift"]
    assert nightly.parameters["ray_address"] == "10.0.0.5:6379"
    assert build([])[-1].parameters.get("ray_address") is None  # without one: the flow's process, as before
    [on_dask] = [d for d in build([], dask_address="tcp://10.0.0.5:8786") if d.name == "nightly-drift"]
    assert on_dask.parameters["dask_address"] == "tcp://10.0.0.5:8786" and "ray_address" not in on_dask.parameters
