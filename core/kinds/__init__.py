"""Task kinds: one module per task type behind `TaskKind` (`base.py`), chosen here and nowhere else.

    settings = ModelSettings()              # the operator's, read from the environment by the entry point
    kind = for_config(cfg, settings)        # the kind of cfg.type, bound to cfg and settings
    rows = load_rows(kind, "train.jsonl")   # core.kinds.data: what every type's data does, through its kind
    teacher = make_teacher(cfg, settings, labeled_pool)
    load = teacher_loader(cfg, settings, "train.jsonl")  # the same, built where it is called: a cluster worker's own

To add a task type: write `core/kinds/<type>.py` with a `TaskKind` subclass (its `defaults` included) and add it to the
`register(...)` line below. Another package adds one the same way from its own module, named as an entry point in the
group `distill_slm.task_kinds` (this package's entry there is this module: `pyproject.toml`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from core.common.config import TaskConfig, register_task_type
from core.common.rows import Example
from core.kinds.base import TaskKind
from core.kinds.classification import Classification
from core.kinds.codegen import CodeGeneration
from core.kinds.data import labeled_rows, load_rows
from core.kinds.extraction import DocumentExtraction
from core.kinds.text import FreeText
from core.settings import ModelSettings
from core.teachers.backends import build_teacher
from core.teachers.base import Teacher
from core.teachers.openai import endpoint_teacher

KINDS: dict[str, type[TaskKind]] = {}


def register(*kinds: type[TaskKind]) -> None:
    """Make each kind's `type` a task type: task files may name it, `for_config` binds it."""
    for kind in kinds:
        KINDS[kind.type] = kind
        register_task_type(kind.type, kind.defaults)


register(Classification, DocumentExtraction, CodeGeneration, FreeText)


def for_config(cfg: TaskConfig, settings: ModelSettings) -> TaskKind:
    """The task kind of `cfg.type`, bound to `cfg` and the operator's `settings` (cheap: a kind holds nothing else)."""
    return KINDS[cfg.type](cfg, settings)


def make_teacher(
    cfg: TaskConfig, settings: ModelSettings, labeled_pool: list[Example] | None = None, adapter: str | Path | None = None
) -> Teacher:
    """The configured teacher backend for this task's type, checked: raises TeacherUnavailable naming the setting to fix.
    `adapter`: an SFT adapter the deliberate backend runs instead of the base model."""
    return build_teacher(cfg, for_config(cfg, settings).teacher_task(), settings, labeled_pool, adapter)


def teacher_loader(
    cfg: TaskConfig, settings: ModelSettings, labeled_path: str | Path | None = None, adapter: str | Path | None = None
) -> Callable[[], Teacher]:
    """`make_teacher` as a picklable call, for a teacher built where it is used (each cluster worker builds its own) or
    only when something is left to ask. An endpoint teacher is built from the `openai` backend and the endpoint half of
    the kind's teacher task alone, so a worker that unpickles it imports no model code (about 0.4 s a process against
    ~9 s with the kinds); the local backends load the labeled rows at `labeled_path` (retrieval's pool) and a model
    anyway."""
    if cfg.teacher.backend == "openai":
        return partial(endpoint_teacher, cfg, settings, for_config(cfg, settings).teacher_task().endpoint())
    return partial(_local_teacher, cfg, settings, labeled_path, adapter)


def _local_teacher(cfg: TaskConfig, settings: ModelSettings, labeled_path: str | Path | None, adapter: str | Path | None) -> Teacher:
    pool = load_rows(for_config(cfg, settings), labeled_path) if labeled_path is not None else None
    return make_teacher(cfg, settings, pool, adapter)


def task_teacher(cfg: TaskConfig, settings: ModelSettings) -> Teacher:
    """The configured teacher as the service and drift ask it: the deliberate backend retrieves its examples from the
    task's labeled rows, loaded here; the others need none."""
    pool = labeled_rows(for_config(cfg, settings))[0] if cfg.teacher.backend == "deliberate" else None
    return make_teacher(cfg, settings, pool)


__all__ = ["KINDS", "TaskKind", "for_config", "register", "make_teacher", "teacher_loader", "task_teacher"]
