"""Early stopping on the validation metric with a real (tiny) model: the best adapter seen is the one kept."""

import json

import torch
from safetensors.torch import load_file

from core.common.rows import Example
from core.settings import ModelSettings
from core.training.sft_trainer import train_sft


def _rows(n):
    labels = ["Good", "Standard", "Bad"]
    return [Example(f"r{i}", f"Interest_Rate: {i}", labels[i % 3]) for i in range(n)]


def test_training_stops_after_patience_and_keeps_the_best_step(tiny_cfg, tmp_path):
    tiny_cfg.training.max_steps, tiny_cfg.training.eval_steps, tiny_cfg.training.patience = 20, 2, 2
    scores = iter([0.2, 0.5, 0.4, 0.3, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0])
    seen = []

    def validate(model):
        assert not model.training  # scored in eval mode, trained in train mode
        seen.append(next(scores))
        return seen[-1]

    adapter, stats = train_sft(
        tiny_cfg, ModelSettings(), _rows(24), tmp_path / "ck", tmp_path / "adapter", progress=False, validate=validate
    )
    # validated at 2, 4 (best), 6, 8 (two without improvement, but no stop before step 10, half of 20), 10: stop
    assert stats.steps == 10 and stats.best_step == 4
    assert [p["step"] for p in stats.learning_curve] == [2, 4, 6, 8, 10]
    curve = json.loads((adapter / "learning_curve.json").read_text())
    assert curve["metric"] == "macro_f1" and {k: curve["curve"][1][k] for k in ("step", "value")} == {"step": 4, "value": 0.5}
    assert all(point["seconds"] >= 0 for point in curve["curve"])  # what each validation cost
    kept = load_file(adapter / "adapter_model.safetensors")
    best = load_file(tmp_path / "ck" / "best" / "adapter_model.safetensors")
    assert all(torch.equal(kept[k], best[k]) for k in best)


def test_without_validation_nothing_changes(tiny_cfg, tmp_path):
    tiny_cfg.training.max_steps = 2
    _, stats = train_sft(tiny_cfg, ModelSettings(), _rows(12), tmp_path / "ck", tmp_path / "adapter", progress=False)
    assert stats.steps == 2 and stats.best_step is None and not (tmp_path / "adapter" / "learning_curve.json").exists()
