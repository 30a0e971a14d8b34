"""One run of a task at a time, held by a real process and freed by killing it with a real signal."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.common.locks import run_lock
from core.errors import RunInProgress

ROOT = Path(__file__).resolve().parents[3]


def test_one_run_of_a_task_at_a_time_and_a_dead_holder_frees_it(tmp_path):
    """A second run fails at once naming the first (its pid); a holder killed with SIGKILL leaves nothing held."""
    code = f"from core.common.locks import run_lock\nwith run_lock({str(tmp_path)!r}, 't'):\n    print('held', flush=True)\n    input()"
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunInProgress, match=f'"pid": {holder.pid}'):
        with run_lock(tmp_path, "t"):
            pass
    with run_lock(tmp_path, "other"):  # another task runs beside it
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run_lock(tmp_path, "t"):  # the kernel released the dead holder's lock
        pass


@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", ""])
def test_a_lock_names_one_folder(tmp_path, name):
    from core.errors import ConfigError

    with pytest.raises(ConfigError):
        with run_lock(tmp_path, name):
            pass
