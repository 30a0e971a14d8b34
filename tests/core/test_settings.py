"""Settings: the models folder of a checkout and of an installed package."""

from pathlib import Path

import core.settings as settings_module


def test_models_live_in_the_checkout_or_else_in_the_users_data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("DISTILL_SLM_MODELS_DIR", raising=False)
    assert settings_module.ModelSettings().models_dir == settings_module.REPO_ROOT / "models"  # this checkout
    monkeypatch.setattr(settings_module, "REPO_ROOT", tmp_path / "site-packages")  # installed: no pyproject.toml beside it
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert settings_module.ModelSettings().models_dir == Path(tmp_path / "data" / "distill-slm" / "models")


def test_the_model_layer_reads_only_its_own_settings_and_the_service_gets_both(monkeypatch):
    from core.settings import ModelSettings, ServiceSettings, model_settings

    monkeypatch.setenv("DISTILL_SLM_SANDBOX_MAX_CONCURRENT", "3")
    monkeypatch.setenv("DISTILL_SLM_MAX_QUEUE", "7")
    assert model_settings().sandbox_max_concurrent == 3  # read when asked: a changed variable takes effect
    assert not hasattr(model_settings(), "max_queue") and "max_queue" not in ModelSettings.model_fields
    service = ServiceSettings()
    assert service.max_queue == 7 and service.sandbox_max_concurrent == 3
