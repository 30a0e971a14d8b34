"""Prefect artifact keys from task names: keys take only lowercase letters, digits and dashes, task names more."""

from __future__ import annotations

import re


def artifact_key(*parts: str) -> str:
    """`artifact_key("Creditmix_KD", "teacher", "eval")` -> "creditmix-kd-teacher-eval"."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
