"""Settings: the models folder of a checkout and of an installed package."""

from pathlib import Path

import core.settings as settings_module


def test_models_live_in_the_checkout_or_else_in_the_users_data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("DISTILL_SLM_MODELS_DIR", raising=False)
    assert settings_module.Settings().models_dir == settings_module.REPO_ROOT / "models"  # this checkout
    monkeypatch.setattr(settings_module, "REPO_ROOT", tmp_path / "site-packages")  # installed: no pyproject.toml beside it
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert settings_module.Settings().models_dir == Path(tmp_path / "data" / "distill-slm" / "models")
