"""Choosing and checking a teacher backend before any row is sent: each failure names the setting to fix."""

import pytest

from core.common.config import TaskConfig
from core.common.ports import free_port
from core.errors import ConfigError, TeacherUnavailable
from core.settings import ModelSettings
from core.teachers.backends import preflight
from tests.core.teachers.conftest import openai_cfg


def test_preflight_names_the_setting_to_fix(server, monkeypatch):
    monkeypatch.delenv("DISTILL_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError, match="DISTILL_TEST_NO_SUCH_KEY' is not a variable the operator allows.*SECRET_ENV_ALLOWED"):
        preflight(openai_cfg(server["url"], api_key_env="DISTILL_TEST_NO_SUCH_KEY"), ModelSettings())
    with pytest.raises(ConfigError, match="host 'teacher.attacker.example' is not one the operator allows.*HOSTS_ALLOWED"):
        preflight(openai_cfg("https://teacher.attacker.example", api_key_env="OPENAI_API_KEY"), ModelSettings())
    monkeypatch.setenv("DISTILL_SLM_SECRET_ENV_ALLOWED", '["DISTILL_TEST_NO_SUCH_KEY"]')  # the operator allows it
    with pytest.raises(TeacherUnavailable, match="teacher.api_key_env: environment variable DISTILL_TEST_NO_SUCH_KEY"):
        preflight(openai_cfg(server["url"], api_key_env="DISTILL_TEST_NO_SUCH_KEY"), ModelSettings())
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TeacherUnavailable, match="teacher.base_url: .* is unreachable"):
        preflight(openai_cfg(dead), ModelSettings())
    with pytest.raises(TeacherUnavailable, match="teacher.model: 'no-such-model' is not served"):
        preflight(openai_cfg(server["url"], model="no-such-model"), ModelSettings())
    with pytest.raises(TeacherUnavailable, match="teacher.model"):
        preflight(TaskConfig.model_validate({"teacher": {"backend": "hf", "model": "/no/such/folder"}}), ModelSettings())
