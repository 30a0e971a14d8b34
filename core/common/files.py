"""Files: task files read one way, published files written whole.

* `read_records` reads JSONL or CSV as (line number, record) pairs; problems raise `DataError`
  naming file, line and field. What a record must hold is the task kind's business (`core.kinds`).
* `write_jsonl` and `atomic_write_text` publish files whole: written to a temporary file, fsynced,
  renamed into place, and the folder fsynced, so a crash leaves the old file or the new one.

    for line, record in read_records("train.jsonl"): ...
    atomic_write_text(path, text)
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from core.errors import DataError


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(path, line, None, f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def _records(path: Path, text: str) -> list[tuple[int, dict]]:
    """(line number, record) pairs from a JSONL or CSV file."""
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise DataError(path, None, None, "empty file")
        # DictReader's line_num is the reader's position after the row: the row's last line.
        return [(reader.line_num, row) for row in reader]
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, number, None, f"invalid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise DataError(path, number, None, "expected a JSON object")
        records.append((number, record))
    return records


def read_records(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, record) pairs of a UTF-8 JSONL or CSV file; a missing file, bad bytes or bad JSON raise DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, "no such file")
    return _records(path, _decode(path))


def nonempty_records(path: str | Path) -> list[tuple[int, dict]]:
    """`read_records`, refusing an empty file."""
    records = read_records(path)
    if not records:
        raise DataError(path, None, None, "empty file: no rows")
    return records


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: str | Path, files: bool = True) -> None:
    """Flush the files directly in `folder` (unless `files` is False) and the folder's own entries to disk."""
    folder = Path(folder)
    if files:
        for item in folder.iterdir():
            if item.is_file():
                fd = os.open(item, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    _fsync_dir(folder)


def atomic_write_text(path: str | Path, text: str | Iterable[str]) -> None:
    """Publish a file whole: temp file in the same folder, fsync, rename, fsync the folder. `text` may be an iterable
    of pieces, written as they come (a large file never held whole)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if isinstance(text, str):
                f.write(text)
            else:
                f.writelines(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Publish rows as JSONL, whole (see `atomic_write_text`); `rows` may be a generator, written a line at a time."""
    atomic_write_text(path, (json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
