"""Teachers: who answers the unlabeled pool for knowledge distillation, and their cached traces.

One module per backend behind one base (`base.Teacher`), chosen in one place (`build_teacher`):

* `openai`: any OpenAI-compatible chat-completions endpoint, with retries and log-probabilities.
* `hf`: a local transformers model, zero-shot.
* `deliberate` (the embedded default): the base model made expensive on purpose — retrieved k-shot
  demonstrations and self-consistency votes.

What differs by task type (the request, reading a reply, local decoding, combining votes) comes from
the task kind as a `TeacherTask`; `core.kinds.make_teacher(cfg, pool)` puts the two together.
`traces` stores answers on disk as they arrive, keyed by input hash.
"""

from __future__ import annotations

from pathlib import Path

from core.common.config import TaskConfig
from core.common.records import Example
from core.teachers.base import Teacher, TeacherTask
from core.teachers.openai import OpenAITeacher

# The local backends (deliberate, hf) import transformers' models: imported when one is chosen, not with the package.


def build_teacher(
    cfg: TaskConfig, task: TeacherTask, labeled_pool: list[Example] | None = None, adapter: str | Path | None = None
) -> Teacher:
    """The configured backend for this task type, checked: raises TeacherUnavailable naming the setting to fix.
    `adapter`: the SFT adapter the local backends (deliberate, hf) run over their model (ignored by openai)."""
    backend = cfg.teacher.backend
    if backend == "openai":
        teacher: Teacher = OpenAITeacher(cfg, task)
    elif backend == "hf":
        from core.teachers.hf import HFTeacher  # noqa: PLC0415 (transformers' models: seconds an endpoint teacher need not pay)

        teacher = HFTeacher(cfg, task, adapter)
    else:
        from core.teachers.deliberate import DeliberateTeacher  # noqa: PLC0415 (as above)

        teacher = DeliberateTeacher(cfg, task, labeled_pool or [], adapter)
    teacher.check()
    return teacher


def preflight(cfg: TaskConfig) -> None:
    """The checks that cost no model load: key, endpoint, model name (openai); the model folder (hf)."""
    if cfg.teacher.backend == "openai":
        teacher = OpenAITeacher(cfg)
        try:
            teacher.check()
        finally:
            teacher.close()
    elif cfg.teacher.backend == "hf":
        from core.teachers.hf import check_hf_source  # noqa: PLC0415 (as above)

        check_hf_source(cfg.teacher.model or "embedded")
