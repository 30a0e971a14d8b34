"""The task runner a flow's independent work goes to on a Ray cluster (prefect-ray, the `scale` extra).

side_by_side.with_options(task_runner=ray_runner(cfg.scale.address, "scale.address"))
"""

from __future__ import annotations

from core.common.ports import check_reachable
from core.errors import ConfigError


def ray_runner(address: str | None, setting: str):
    """prefect-ray's `RayTaskRunner` on the cluster at `address` (None: a local one it starts; `auto`: the one this
    machine joined); refused naming `setting` when prefect-ray is missing or nothing answers at a host:port address."""
    try:
        from prefect_ray import RayTaskRunner  # noqa: PLC0415 (the optional extra)
    except ImportError:
        raise ConfigError(f"{setting}: running on Ray needs prefect-ray: pip install 'distill-slm[scale]'") from None
    if address not in (None, "auto") and not address.startswith("ray://"):
        check_reachable(address, setting)  # before any work starts
    return RayTaskRunner(address=address, init_kwargs={"log_to_driver": False, "include_dashboard": False})
