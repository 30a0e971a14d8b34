"""SFT: LoRA on the labeled rows, the best step on the validation rows kept (section `training`).

adapter_dir, stats = train(cfg, settings, rows, validation, checkpoint_dir, out_dir)
"""

from __future__ import annotations

from pathlib import Path

from core.common.config import TaskConfig
from core.common.rows import Example
from core.methods.base import validator
from core.settings import ModelSettings
from core.training.sft_trainer import TrainStats, train_sft


def check(cfg: TaskConfig) -> None:
    """Every task type trains on its labeled rows."""


def train(
    cfg: TaskConfig,
    settings: ModelSettings,
    rows: list[Example],
    validation: list[Example],
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    progress: bool = True,
    source: str = "<train split>",
) -> tuple[Path, TrainStats]:
    """Train (or resume) an SFT adapter on `rows`, keeping the best step on `validation` (when there are any)."""
    validate = validator(cfg, settings, validation)
    return train_sft(cfg, settings, rows, checkpoint_dir, out_dir, progress=progress, source=source, validate=validate)
