"""Settings: the models folder of a checkout and of an installed package."""

from pathlib import Path

import core.settings as settings_module


def test_models_live_in_the_checkout_or_else_in_the_users_data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("DISTILL_SLM_MODELS_DIR", raising=False)
    assert settings_module.ModelSettings().models_dir == settings_module.REPO_ROOT / "models"  # this checkout
    monkeypatch.setattr(settings_module, "REPO_ROOT", tmp_path / "site-packages")  # installed: no pyproject.toml beside it
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert settings_module.ModelSettings().models_dir == Path(tmp_path / "data" / "distill-slm" / "models")


def test_the_model_layer_takes_only_its_own_settings_and_the_service_gets_both(monkeypatch):
    from core.settings import ModelSettings, ServiceSettings

    monkeypatch.setenv("DISTILL_SLM_SANDBOX_MAX_CONCURRENT", "3")
    monkeypatch.setenv("DISTILL_SLM_MAX_QUEUE", "7")
    assert ModelSettings().sandbox_max_concurrent == 3  # an entry point reads its environment when it builds them
    assert not hasattr(ModelSettings(), "max_queue") and "max_queue" not in ModelSettings.model_fields
    service = ServiceSettings()
    assert service.max_queue == 7 and service.sandbox_max_concurrent == 3
    assert ModelSettings(sandbox_max_concurrent=2).sandbox_max_concurrent == 2  # given outright, the environment yields


def test_a_service_passes_its_own_settings_to_the_model_layer(tmp_path, monkeypatch):
    """What the service was given is what its model layer uses, whatever the environment says: the settings are passed
    in, not read again below the entry point."""
    from core import sandbox
    from core.model.loading import resolve_base_model
    from core.settings import ServiceSettings

    monkeypatch.setenv("DISTILL_SLM_SANDBOX_ALLOW_WEAKER", "0")
    monkeypatch.setenv("DISTILL_SLM_MODELS_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(sandbox, "probe", lambda: sandbox.Isolation("none", "no bwrap here"))  # as on a machine without one
    given = ServiceSettings(sandbox_allow_weaker=True, models_dir=tmp_path / "models")
    assert sandbox.isolation(given) == "limits"  # the environment said no; the settings handed in say yes
    folder = tmp_path / "models" / "SmolLM2-135M-Instruct"
    folder.mkdir(parents=True)
    (folder / "distill-slm-manifest.json").write_text("{}")
    assert resolve_base_model("embedded", given) == (str(folder), None)
