"""One run of a task at a time.

A drift retrain started beside a manual run of the same task would share its checkpoints, trace files and adapter
folders. `run_lock` takes an exclusive `flock` on `<work_dir>/.locks/<task>.run.lock`; the kernel releases it if the
holder dies (even by SIGKILL), and the file stays (removing a lock file races with a process that has just opened
it). A second run fails at once with RunInProgress naming the first: its pid, host and start, written in the file.

    with run_lock(cfg.work_dir, cfg.name):
        ...   # the run
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.errors import ConfigError, RunInProgress


@contextmanager
def run_lock(work_dir: str | Path, task: str, what: str = "distill") -> Iterator[None]:
    if not task or "/" in task or task.startswith(".") or "\0" in task:
        raise ConfigError(f"task name {task!r} is not one folder name")
    folder = Path(work_dir) / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{task}.run.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "holder unknown"
            raise RunInProgress(f"task {task!r} is being run already ({holder}); wait for it to finish, or stop it") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"what": what, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
