"""The SFT method: labeled rows in, an adapter out; with validation rows the best step is kept, without them the last."""

import json

from core.common.rows import Example
from core.methods import sft
from core.model.loading import load_model
from core.settings import ModelSettings

LABELS = ("Good", "Standard", "Bad")


def _rows(n: int, prefix: str) -> list[Example]:
    return [Example(f"{prefix}{i}", f"Num_Bank_Accounts: {i}; Interest_Rate: {3 * i}", LABELS[i % 3]) for i in range(n)]


def test_sft_validates_every_eval_steps_and_keeps_the_best_step(tiny_cfg, tmp_path):
    tiny_cfg.training.max_steps, tiny_cfg.training.eval_steps, tiny_cfg.training.patience = 4, 2, 10
    adapter, stats = sft.train(
        tiny_cfg, ModelSettings(), _rows(12, "t"), _rows(3, "v"), tmp_path / "ck", tmp_path / "adapter", progress=False
    )
    curve = stats.learning_curve
    assert [p["step"] for p in curve] == [2, 4]  # the task's primary metric (macro-F1) at every eval_steps
    assert all(0.0 <= p["value"] <= 1.0 for p in curve)
    best = max(curve, key=lambda p: p["value"])  # the first of equal bests: a later step must improve to be kept
    assert stats.best_step == best["step"] and stats.steps == 4
    assert json.loads((adapter / "learning_curve.json").read_text())["rows"] == 3  # the report's scale of what they decide
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"
    load_model(tiny_cfg.model, ModelSettings(), adapter=adapter)  # the kept adapter loads as any other


def test_without_validation_rows_sft_keeps_the_last_step(tiny_cfg, tmp_path):
    tiny_cfg.training.max_steps = 3
    adapter, stats = sft.train(tiny_cfg, ModelSettings(), _rows(12, "t"), [], tmp_path / "ck", tmp_path / "adapter", progress=False)
    assert stats.steps == 3 and stats.best_step is None and stats.learning_curve == []
    assert stats.rows >= 12 and stats.distinct_rows == 12
    assert (adapter / "adapter_model.safetensors").exists()
