"""The Ray task runner a flow's independent work goes to: refused before any work when its address does not answer."""

import pytest

from core.errors import ConfigError
from flows.runners import ray_runner


def test_an_address_nothing_answers_at_is_refused_naming_the_setting():
    with pytest.raises(ConfigError, match=r"scale.address: nothing answers at '127.0.0.1:1'"):
        ray_runner("127.0.0.1:1", "scale.address")


def test_a_runner_for_a_local_or_joined_cluster_connects_only_when_a_flow_starts_it():
    from prefect_ray import RayTaskRunner

    for address in (None, "auto"):
        runner = ray_runner(address, "scale.address")
        assert isinstance(runner, RayTaskRunner) and runner.address == address
