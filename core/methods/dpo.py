"""DPO: preference pairs move an adapter (section `dpo`; needs this run's `sft` with `dpo.from_sft`). The pairs are
the user's (`data.preferences`) or built on-policy: the gold or teacher answer chosen, the student's own wrong answer
rejected (the task kind's `preference_pairs`).

    pairs, counts, source = pairs_for(cfg, rows, start_adapter, traces)
    adapter_dir, stats = train(cfg, pairs, checkpoint_dir, out_dir, start_adapter)
"""

from __future__ import annotations

from pathlib import Path

from core.common.config import TaskConfig
from core.common.rows import Example, Pair
from core.kinds import for_config
from core.kinds.data import label_set
from core.model.loading import load_model
from core.settings import ModelSettings
from core.training.dpo_trainer import load_pairs, train_dpo


def check(cfg: TaskConfig) -> None:
    """Every task type builds pairs (classification: labels; generation: answers)."""


def pairs_for(
    cfg: TaskConfig, settings: ModelSettings, rows: list[Example], start_adapter: str | Path | None, traces: list[dict] | None
) -> tuple[list[Pair], dict, str]:
    """The pairs DPO trains on, their counts and where they came from."""
    kind = for_config(cfg, settings)
    if cfg.data.preferences is not None:
        pairs = load_pairs(cfg.data.preferences, label_set(kind))
        return pairs, {"user": len(pairs)}, str(cfg.data.preferences)
    model, tokenizer = load_model(cfg.model, settings, adapter=start_adapter)
    pairs, counts = kind.preference_pairs(rows, kind.decoder(model, tokenizer, adapter=start_adapter), traces)
    return pairs, counts, "pairs built on-policy from the training rows"


# The entry point: train (or resume) a DPO adapter from `start_adapter` (SFT -> DPO) or a fresh LoRA, on `pairs`.
train = train_dpo
