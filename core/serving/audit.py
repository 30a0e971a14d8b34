"""Append-only audit log: one JSON line per request, answer, refused request and admin action; size-rotated,
never rewritten (but for cutting off a last line a crash left half-written).

Several service processes may write the same log: every write holds an exclusive `flock` on
`<log>.lock`, reopens the file when another process has rotated it, rotates when it is full
(`audit.jsonl` -> `audit.jsonl.1`, older files shift up, as logging's RotatingFileHandler names
them) and appends the whole line in one `write`. No line is lost or split between files.

`redact` ("hash" or "drop") keeps inputs out of the log for users who may not store them: the
input becomes its SHA-256 (or goes), its length stays. The nightly drift evaluation reads the
log back with `iter_audit` (streamed, a time window, bad lines counted and skipped).

    log = AuditLog("runs/.audit/audit.jsonl", redact="hash")
    log.write({"at": time.time(), "task": "creditmix", "input": "...", "output": "Good"})
    for record in iter_audit("runs/.audit/audit.jsonl", since=time.time() - 86400): ...
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

Redact = Literal["none", "hash", "drop"]


class AuditLog:
    def __init__(self, path: str | Path, max_bytes: int = 50_000_000, backups: int = 20, redact: Redact = "none") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.backups, self.redact = max_bytes, backups, redact
        self._lock_fd = os.open(_lock_path(self.path), os.O_CREAT | os.O_RDWR, 0o644)
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._inode: int | None = None
        with self._locked():
            _drop_torn_tail(self.path)

    def write(self, record: dict) -> None:
        line = (json.dumps(redacted(record, self.redact), ensure_ascii=False, default=str) + "\n").encode()
        with self._threads, self._locked():
            fd = self._current()
            size = os.fstat(fd).st_size
            if size and size + len(line) > self.max_bytes:
                self._rotate()
                fd = self._current()
            os.write(fd, line)

    def close(self) -> None:
        with self._threads:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    @contextlib.contextmanager
    def _locked(self):
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _current(self) -> int:
        """The open log file, reopened when another process rotated the one this process had open."""
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = None
        if self._fd is None or inode != self._inode:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._inode = os.fstat(self._fd).st_ino
        return self._fd

    def _rotate(self) -> None:
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))


def redacted(record: dict, redact: Redact) -> dict:
    """The record as the log may keep it: with `hash` or `drop` its input is replaced by a hash or removed (its length stays)."""
    text = record.get("input")
    if redact == "none" or not isinstance(text, str):
        return record
    kept = {k: v for k, v in record.items() if k != "input"} | {"input_chars": len(text), "redacted": redact}
    if redact == "hash":
        kept["input_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return kept


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


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


def _log_files(path: Path) -> list[Path]:
    """The log's files, oldest first: the highest-numbered rotation first, the live file last."""
    rotated = [p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()]
    return [*sorted(rotated, key=lambda p: -int(p.suffix[1:])), path]


def iter_audit(
    path: str | Path, since: float | None = None, until: float | None = None, skipped: Counter | None = None, strict: bool = False
) -> Iterator[dict]:
    """Records with `since <= at < until` (either bound optional), oldest first across rotated files, one line at a time.

    The files are opened under the writers' lock, so a rotation during the read neither skips nor repeats a file.
    A last line without its newline (a writer killed mid-line) is left out; so is, unless `strict`, a line that does
    not parse. Each is counted in `skipped` under its reason; `strict` raises on a bad line instead."""
    path = Path(path)
    skipped = skipped if skipped is not None else Counter()
    handles = []
    lock_fd = os.open(_lock_path(path), os.O_CREAT | os.O_RDWR, 0o644) if path.parent.exists() else None
    try:
        if lock_fd is not None:
            fcntl.flock(lock_fd, fcntl.LOCK_SH)
        for file in _log_files(path):
            with contextlib.suppress(FileNotFoundError):
                if since is not None and file != path and file.stat().st_mtime < since:
                    continue  # rotated before the window opened: nothing in it is new
                handles.append(open(file, "rb"))  # noqa: SIM115 (closed below, after the lock is released)
    finally:
        if lock_fd is not None:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)
    try:
        for handle in handles:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    skipped["torn last line"] += 1
                    continue
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    if strict:
                        raise
                    skipped["unparsable line"] += 1
                    continue
                if since is None and until is None:
                    yield record
                    continue
                at = record.get("at") if isinstance(record, dict) else None
                if not isinstance(at, int | float):
                    skipped["no timestamp"] += 1
                elif (since is None or at >= since) and (until is None or at < until):
                    yield record
    finally:
        for handle in handles:
            handle.close()


def read_audit(path: str | Path) -> list[dict]:
    """Every record, oldest first, across rotated files. A last line cut short by a killed process is left out; a bad
    line anywhere else raises, since it means the log was damaged."""
    return list(iter_audit(path, strict=True))
