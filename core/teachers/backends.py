"""`build_teacher` and `preflight`: the one place a teacher backend is chosen (the package docstring says which).

Apart from `core/teachers/__init__.py` so that the endpoint path (`openai`, `traces`) imports no transformers models."""

from __future__ import annotations

from pathlib import Path

from core.common.config import TaskConfig
from core.common.rows import Example
from core.settings import ModelSettings
from core.teachers.base import Teacher, TeacherTask
from core.teachers.deliberate import DeliberateTeacher
from core.teachers.hf import HFTeacher, check_hf_source
from core.teachers.openai import OpenAITeacher, endpoint_teacher


def build_teacher(
    cfg: TaskConfig,
    task: TeacherTask,
    settings: ModelSettings,
    labeled_pool: list[Example] | None = None,
    adapter: str | Path | None = None,
) -> Teacher:
    """The configured backend for this task type, checked: raises TeacherUnavailable naming the setting to fix.
    `adapter`: the SFT adapter the local backends (deliberate, hf) run over their model (ignored by openai)."""
    backend = cfg.teacher.backend
    if backend == "openai":
        return endpoint_teacher(cfg, settings, task)
    if backend == "hf":
        teacher: Teacher = HFTeacher(cfg, task, settings, adapter)
    else:
        teacher = DeliberateTeacher(cfg, task, settings, labeled_pool or [], adapter)
    teacher.check()
    return teacher


def preflight(cfg: TaskConfig, settings: ModelSettings) -> None:
    """The checks that cost no model load: key, endpoint, model name (openai); the model folder (hf)."""
    if cfg.teacher.backend == "openai":
        teacher = OpenAITeacher(cfg, settings)
        try:
            teacher.check()
        finally:
            teacher.close()
    elif cfg.teacher.backend == "hf":
        check_hf_source(cfg.teacher.model or "embedded", settings)
