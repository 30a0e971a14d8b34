"""Append-only audit log: one JSON line per request and answer, size-rotated, never rewritten.

Rotation is the standard library's RotatingFileHandler: a full `audit.jsonl` is renamed to
`audit.jsonl.1` (older files shift up) and a new one is started; no line is ever edited.
The nightly drift evaluation reads these files back with `read_audit`.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
from pathlib import Path


class AuditLog:
    def __init__(self, path: str | Path, max_bytes: int = 50_000_000, backups: int = 20) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One logger (and file handler) per instance: closing one log never silences another on the same file.
        self._logger = logging.getLogger(f"distill_slm.audit.{self.path.resolve()}.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        handler = logging.handlers.RotatingFileHandler(self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(handler)

    def write(self, record: dict) -> None:
        self._logger.info(json.dumps(record, ensure_ascii=False, default=str))

    def close(self) -> None:
        for handler in list(self._logger.handlers):
            handler.close()
            self._logger.removeHandler(handler)


def read_audit(path: str | Path) -> list[dict]:
    """Every record, oldest first, across rotated files."""
    path = Path(path)
    files = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    records = []
    for file in [*files, path]:
        if file.exists():
            records.extend(json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip())
    return records
