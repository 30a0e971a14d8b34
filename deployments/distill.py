"""The `distill` flow as a Prefect deployment, so retrains start from the Prefect UI's form.

Needs a running Prefect server (the embedded one used by `distill-slm run` lives only as long as
its run):

    prefect server start &                                   # SQLite by default
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    distill-slm deploy [CONFIG]                              # serves until interrupted
"""

from __future__ import annotations

from core.common.config import TaskConfig
from flows.distill import distill


def serve(cfg: TaskConfig, name: str = "retrain") -> None:
    """Register the deployment (the config as its default parameters) and run it in this process."""
    distill.serve(name=name, parameters={"cfg": cfg.model_dump(mode="json")}, tags=[cfg.name])
