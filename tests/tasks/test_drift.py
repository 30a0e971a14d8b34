"""Which tasks the nightly drift check watches and where it writes (the check itself, night after night, runs in
tests/flows/test_drift.py through the flow that calls it)."""

import yaml

from core.common.config import TaskConfig
from core.registry import Registry
from tasks.drift import drift_dir, served_tasks
from tests.conftest import make_adapter


def test_drift_watches_the_tasks_with_a_production_version_only(tiny_cfg, tmp_path):
    registry = Registry(tmp_path / "runs")
    config = yaml.safe_dump(tiny_cfg.model_dump(mode="json"))
    adapter = make_adapter(tiny_cfg, tmp_path / "adapter", seed=1)
    for task in ("served", "staged", "trained"):
        registry.register(task, "sft", adapter, {"macro_f1": 0.5}, config, {})
    registry.promote("served", "sft/v0001", TaskConfig().promotion.model_copy(update={"guard_min": {}}))
    registry.promote("staged", "sft/v0001", alias="staging")
    assert served_tasks(tmp_path / "runs") == ["served"]  # staging or no alias: nothing answers traffic with it
    assert drift_dir(tmp_path / "runs", "served") == tmp_path / "runs" / "served" / "drift"
    registry.rollback("served")
    assert served_tasks(tmp_path / "runs") == []
