"""Append-only audit log: one JSON line per request and answer, size-rotated, never rewritten (but for cutting
off a last line a crash left half-written).

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
        _drop_torn_tail(self.path)
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


def _drop_torn_tail(path: Path) -> None:
    """A process killed mid-write can leave a last line without its newline: not a record, and the next record
    would be glued to it. Cut it off (the one edit the log ever gets), so appending starts on a line of its own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, 2)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)


def read_audit(path: str | Path) -> list[dict]:
    """Every record, oldest first, across rotated files. A last line cut short by a killed process (no newline at the
    end of the file) is left out; a bad line anywhere else raises, since it means the log was damaged."""
    path = Path(path)
    files = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    records = []
    for file in [*files, path]:
        if not file.exists():
            continue
        text = file.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        if lines and not text.endswith("\n"):
            lines = lines[:-1]  # torn by a crash mid-write
        records.extend(json.loads(line) for line in lines if line.strip())
    return records
