"""The cluster task runner a flow's independent work goes to (prefect-ray's, prefect-dask's): refused before any work
when its address does not answer or is not an address of that engine."""

import pytest

from core.errors import ConfigError
from flows.runners import cluster_runner, reserving


@pytest.mark.parametrize("runner, address", [("ray", "127.0.0.1:1"), ("dask", "tcp://127.0.0.1:1")])
def test_an_address_nothing_answers_at_is_refused_naming_the_setting(runner, address):
    with pytest.raises(ConfigError, match=r"scale.address: nothing answers at '127.0.0.1:1'"):
        cluster_runner(runner, address, "scale.address")


def test_a_dask_address_without_its_scheme_or_an_unknown_engine_is_refused():
    with pytest.raises(ConfigError, match=r"dask_address: a Dask scheduler is addressed as tcp://HOST:PORT, not '10.0.0.5:8786'"):
        cluster_runner("dask", "10.0.0.5:8786", "dask_address")
    with pytest.raises(ConfigError, match=r"scale.address: 'local' is not a cluster"):
        cluster_runner("local", None, "scale.address")


def test_a_runner_for_a_local_or_joined_cluster_connects_only_when_a_flow_starts_it():
    from prefect_dask import DaskTaskRunner
    from prefect_ray import RayTaskRunner

    for address in (None, "auto"):
        runner = cluster_runner("ray", address, "scale.address")
        assert isinstance(runner, RayTaskRunner) and runner.address == address
    local = cluster_runner("dask", None, "scale.address")
    assert isinstance(local, DaskTaskRunner) and local.address is None and local.cluster_kwargs["n_workers"] == 2


def test_a_gpu_is_asked_of_each_engine_in_its_own_terms():
    import dask

    with reserving("dask", 1):
        assert dask.get_annotations() == {"resources": {"GPU": 1}}
    with reserving("dask", 0):
        assert dask.get_annotations() == {}
    with reserving("ray", 1):
        from prefect_ray.context import RemoteOptionsContext

        assert RemoteOptionsContext.get().current_remote_options == {"num_gpus": 1}
