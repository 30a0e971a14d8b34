"""The training tasks against a real (temporary) Prefect server: an adapter is trained once (a rerun after success trains
nothing, a rerun after a crash resumes from its checkpoints), and KD without usable traces stops naming the file."""

import json
from pathlib import Path

import pytest

from core.errors import DataError
from tasks.prepare import prepare_data
from tasks.train import train_kd_task, train_sft_task


def test_an_adapter_is_trained_once_and_a_crash_before_its_marker_resumes(prefect_server, tiny_cfg):
    tiny_cfg.training.max_steps = 2
    prepared = prepare_data(tiny_cfg)
    adapter = Path(train_sft_task(tiny_cfg, prepared["train"], prepared["fingerprint"]))
    done = adapter / "train_stats.json"
    assert json.loads(done.read_text())["steps"] == 2
    written = done.stat().st_mtime_ns
    assert train_sft_task(tiny_cfg, prepared["train"], prepared["fingerprint"]) == str(adapter)
    assert done.stat().st_mtime_ns == written  # finished: nothing trained again
    done.unlink()  # a crash after the adapter's files, before the marker that says they are complete
    assert train_sft_task(tiny_cfg, prepared["train"], prepared["fingerprint"]) == str(adapter)
    stats = json.loads(done.read_text())
    assert stats["resumed_from"] and stats["resumed_from"].endswith("checkpoint-2")  # from its last checkpoint, not from scratch
    tiny_cfg.training.learning_rate *= 2  # other settings: another run folder
    assert train_sft_task(tiny_cfg, prepared["train"], prepared["fingerprint"]) != str(adapter)


def test_kd_without_a_usable_trace_stops_naming_the_file(prefect_server, tiny_cfg, tmp_path):
    traces = tmp_path / "traces.jsonl"
    traces.write_text(json.dumps({"input_sha256": "a", "prompt": "x", "output": None, "error": "answer outside the label set"}) + "\n")
    with pytest.raises(DataError, match=r"traces.jsonl: no usable teacher traces \(1 failed\)"):
        train_kd_task.with_options(retries=0)(tiny_cfg, str(traces), {"n_train": 0})
