"""Task kinds: one module per task type behind `TaskKind` (`base.py`), chosen here and nowhere else.

    kind = kind_of(cfg)                     # by cfg.type
    rows = kind.load_rows(cfg, "train.jsonl")
    teacher = make_teacher(cfg, labeled_pool)

To add a task type: write `core/kinds/<type>.py` with a `TaskKind` subclass, add it to `KINDS`
below, and give its defaults in `core.common.config.TYPE_DEFAULTS`.
"""

from __future__ import annotations

from pathlib import Path

from core.common.config import TYPE_DEFAULTS, TaskConfig
from core.common.rows import Example
from core.kinds.base import ServedAnswer, TaskKind
from core.kinds.classification import Classification
from core.kinds.codegen import CodeGeneration
from core.kinds.extraction import DocumentExtraction
from core.teachers.backends import build_teacher
from core.teachers.base import Teacher

KINDS: dict[str, TaskKind] = {kind.type: kind for kind in (Classification(), DocumentExtraction(), CodeGeneration())}
assert set(KINDS) == set(TYPE_DEFAULTS), f"task types {sorted(TYPE_DEFAULTS)} and kinds {sorted(KINDS)} disagree"


def kind_of(cfg: TaskConfig) -> TaskKind:
    return KINDS[cfg.type]


def make_teacher(cfg: TaskConfig, labeled_pool: list[Example] | None = None, adapter: str | Path | None = None) -> Teacher:
    """The configured teacher backend for this task's type, checked: raises TeacherUnavailable naming the setting to fix.
    `adapter`: an SFT adapter the deliberate backend runs instead of the base model."""
    return build_teacher(cfg, kind_of(cfg).teacher_task(cfg), labeled_pool, adapter)


__all__ = ["KINDS", "ServedAnswer", "TaskKind", "kind_of", "make_teacher"]
