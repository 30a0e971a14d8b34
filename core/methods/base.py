"""What the methods share: the folder a run's checkpoints and adapter live in."""

from __future__ import annotations

from pathlib import Path

from core.common.config import TaskConfig
from core.common.rows import json_sha256


def run_dir(cfg: TaskConfig, method: str, fingerprint: dict) -> Path:
    """Same data and settings -> same folder, so a crashed run finds its checkpoints again."""
    key = [fingerprint, cfg.training.model_dump(), cfg.model.model_dump(), cfg.instruction]
    return cfg.work_dir / cfg.name / f"{method}-{json_sha256(key, 12)}"
