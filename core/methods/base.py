"""What the methods share: the folder a run's checkpoints and adapter live in."""

from __future__ import annotations

from pathlib import Path

from core.common.config import TaskConfig
from core.common.rows import Example, json_sha256
from core.evaluation.evaluate import validation_score
from core.kinds import for_config
from core.model.loading import load_tokenizer
from core.settings import ModelSettings
from core.training.sft_trainer import Validate


def run_dir(cfg: TaskConfig, method: str, fingerprint: dict) -> Path:
    """Same data and settings -> same folder, so a crashed run finds its checkpoints again."""
    key = [fingerprint, cfg.training.model_dump(), cfg.model.model_dump(), cfg.instruction]
    return cfg.work_dir / cfg.name / f"{method}-{json_sha256(key, 12)}"


def validator(cfg: TaskConfig, settings: ModelSettings, validation: list[Example]) -> Validate | None:
    """The task's primary metric of the model being trained on `validation` (None without rows: no early stopping)."""
    if not validation:
        return None
    kind, tokenizer = for_config(cfg, settings), load_tokenizer(cfg.model, settings)

    def validate(model) -> float:
        return validation_score(kind, model, tokenizer, validation)

    validate.rows = len(validation)  # the learning curve records it: how finely the rows can tell two steps apart
    return validate
