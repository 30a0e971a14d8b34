"""The task runner a flow's independent work goes to on a cluster: prefect-ray's or prefect-dask's (the `scale` extra).

side_by_side.with_options(task_runner=cluster_runner(cfg.scale.runner, cfg.scale.address, "scale.address"))
with reserving(cfg.scale.runner, gpus=1):   # each task submitted here asks for a GPU of the cluster
    future = method_task.submit(...)
"""

from __future__ import annotations

import contextlib

from core.common.cluster import check_address
from core.errors import ConfigError


def cluster_runner(runner: str, address: str | None, setting: str):
    """The task runner on the Ray cluster or Dask scheduler at `address` (None: a local one it starts; Ray's `auto`:
    the one this machine joined); refused naming `setting` when the extra is missing or nothing answers there."""
    if runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise ConfigError(f"{setting}: running on Ray needs prefect-ray: pip install 'distill-slm[scale]'") from None
        check_address(runner, address, setting)  # before any work starts
        return RayTaskRunner(address=address, init_kwargs={"log_to_driver": False, "include_dashboard": False})
    if runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ConfigError(f"{setting}: running on Dask needs prefect-dask: pip install 'distill-slm[scale]'") from None
        if address is None:
            return DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True, "dashboard_address": None})
        check_address(runner, address, setting)
        return DaskTaskRunner(address=address)
    raise ConfigError(f"{setting}: {runner!r} is not a cluster (ray or dask)")


def reserving(runner: str, gpus: float) -> contextlib.AbstractContextManager:
    """Tasks submitted inside ask the cluster for `gpus` GPUs each (Ray's `num_gpus`; Dask's worker resource `GPU`)."""
    if runner == "ray":
        from prefect_ray.context import remote_options

        return remote_options(num_gpus=gpus)
    if runner == "dask" and gpus:
        import dask

        return dask.annotate(resources={"GPU": gpus})
    return contextlib.nullcontext()
