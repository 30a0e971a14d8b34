"""What the methods share: the run folder a crashed run finds again, and the validation score early stopping reads."""

from core.common.rows import Example
from core.methods.base import run_dir, validator
from core.model.loading import load_model
from core.settings import ModelSettings


def test_a_run_folder_depends_on_data_and_settings_only(tiny_cfg):
    first = run_dir(tiny_cfg, "sft", {"train_sha256": "x"})
    assert run_dir(tiny_cfg, "sft", {"train_sha256": "x"}) == first
    assert run_dir(tiny_cfg, "sft", {"train_sha256": "y"}) != first and run_dir(tiny_cfg, "kd", {"train_sha256": "x"}) != first
    tiny_cfg.training.learning_rate = 1e-4
    assert run_dir(tiny_cfg, "sft", {"train_sha256": "x"}) != first


def test_the_validator_scores_the_model_as_it_is_on_the_primary_metric(tiny_cfg):
    assert validator(tiny_cfg, ModelSettings(), []) is None  # no validation rows: nothing to stop on
    rows = [Example(f"v{i}", f"Num_Bank_Accounts: {i}", label) for i, label in enumerate(tiny_cfg.labels * 2)]
    score = validator(tiny_cfg, ModelSettings(), rows)
    model, _ = load_model(tiny_cfg.model, ModelSettings())
    first = score(model)
    assert 0.0 <= first <= 1.0 and score(model) == first  # deterministic: the same weights give the same figure
