"""Self-training: SFT again on the labeled rows plus the SFT adapter's confident answers on the pool (section
`self_training`; needs this run's `sft`). The confidence threshold is the lowest at which the labeler's answers on
the validation rows are `self_training.min_precision` correct.

    added, report = select(cfg, settings, validation, validation_traces, pool_traces)
    adapter_dir, stats = train(cfg, settings, gold, added, validation, checkpoint_dir, out_dir)
"""

from __future__ import annotations

import json
from pathlib import Path

from core.common.config import TaskConfig
from core.common.files import atomic_write_text
from core.common.rows import Example
from core.errors import ConfigError
from core.kinds import KINDS, for_config
from core.kinds.data import train_rows
from core.methods.sft import train as train_sft
from core.settings import ModelSettings
from core.training.data_parallel import main_process
from core.training.sft_trainer import TrainStats

LABELER_MODES = ("deliberate", "zero-shot")  # how this run's SFT adapter labels: retrieved shots + votes, or as served


def labeler_config(cfg: TaskConfig, zero_shot: bool) -> TaskConfig:
    """The teacher settings under which this run's SFT adapter labels: the deliberate backend (retrieved shots + votes),
    or `zero_shot`, the hf backend over the run's own base model (the adapter answering as it is served)."""
    update = {"backend": "hf", "model": cfg.model.base_model} if zero_shot else {"backend": "deliberate"}
    return cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update=update)})


def choose_labeler(cfg: TaskConfig, settings: ModelSettings, validation: list[Example], traces: dict[str, dict[str, dict]]) -> dict:
    """The labeler mode with the better primary metric on the validation rows (`traces`: mode -> its answers to them,
    keyed by input hash), and both figures. Ties go to the first mode given."""
    metric = cfg.promotion.primary_metric
    scores = {mode: for_config(cfg, settings).teacher_metrics(validation, answers)[metric] for mode, answers in traces.items()}
    best = max(scores, key=scores.get)
    return {"mode": best, "metric": metric, "validation": scores}


def check(cfg: TaskConfig) -> None:
    if not KINDS[cfg.type].escalates:
        raise ConfigError(f"methods: selftrain needs answers with a calibrated confidence; task type {cfg.type!r} has none")


def select(
    cfg: TaskConfig, settings: ModelSettings, validation: list[Example], validation_traces: dict[str, dict], pool_traces: list[dict]
) -> tuple[list[Example], dict]:
    """The labeler's pool answers confident enough to train on, and a report of the threshold chosen."""
    if not validation:
        raise ConfigError("selftrain chooses its threshold on the validation split: set training.validation_per_class")
    return for_config(cfg, settings).confident_rows(validation, validation_traces, pool_traces)


def train(
    cfg: TaskConfig,
    settings: ModelSettings,
    gold: list[Example],
    added: list[Example],
    validation: list[Example],
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    report: dict | None = None,
    progress: bool = True,
    source: str = "<train split + pool>",
) -> tuple[Path, TrainStats]:
    """Train (or resume) on `gold` (distinct rows) plus `added`, balanced as SFT's rows are; `report` (the threshold and
    the rows added) is written beside the adapter (`self_training.json`)."""
    gold = list({r.id: r for r in gold}.values())  # a prepared train split repeats minority rows
    rows = train_rows(for_config(cfg, settings), gold + added)
    adapter_dir, stats = train_sft(cfg, settings, rows, validation, checkpoint_dir, out_dir, progress=progress, source=source)
    report = (report or {}) | {"gold_rows": len(gold), "training_rows_after_balancing": len(rows)}
    if main_process():
        atomic_write_text(adapter_dir / "self_training.json", json.dumps(report, indent=2))
    return adapter_dir, stats
