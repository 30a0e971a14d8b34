"""`distill-slm run` starts its own Prefect server; SIGKILL the run and the server goes with it."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead, only not yet reaped
        return f.read().split()[2] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killing_the_run_leaves_no_prefect_server_behind(tiny_model_dir, tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text(f"model: {{base_model: {tiny_model_dir}}}\nwork_dir: {tmp_path / 'work'}\ntraining: {{max_steps: 100000}}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    run = subprocess.Popen(
        [sys.executable, "-m", "distill_slm.cli", "run", str(task), "--runs-dir", str(tmp_path / "runs")],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    server_pid = None
    deadline = time.monotonic() + 180
    for line in run.stderr:
        if found := re.search(r"prefect server for this run: \S+ \(pid (\d+)\)", line):
            server_pid = int(found.group(1))
        if server_pid and "prepare_data" in line:  # the flow is running against it
            break
        assert time.monotonic() < deadline, "the run never started its flow"
    assert server_pid and _alive(server_pid)
    run.send_signal(signal.SIGKILL)
    run.wait()
    for _ in range(100):
        if not _alive(server_pid):
            break
        time.sleep(0.1)
    assert not _alive(server_pid), "the Prefect server outlived the run"
