"""Data-parallel training for real: `accelerate launch` starts two gloo DDP processes that train the tiny model."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.common.config import TaskConfig
from core.common.ports import free_port
from core.common.rows import Example
from core.methods import launch, sft
from core.settings import ModelSettings, ServiceSettings
from demos import creditmix

# A launch costs ~15 s of imports per rank on 2 cores; the kill-and-resume and failure tests launch twice and once more,
# so they run with the scale tests (`make test-scale`), outside the default suite's 15 minutes.
scale_test = pytest.mark.skipif(not os.environ.get("DISTILL_SLM_SCALE_TESTS"), reason="two more DDP launches: `make test-scale` runs it")


def config(model_dir: Path, processes: int) -> TaskConfig:
    cfg = TaskConfig()
    cfg.model.base_model = str(model_dir)
    cfg.scale.train_processes = processes
    t = cfg.training
    t.max_steps, t.save_steps, t.batch_size, t.learning_rate, t.cpu_autocast = 16, 4, 8, 2e-3, "off"
    return cfg


def rows() -> list[Example]:
    return [Example(**r) for r in creditmix.generate(64, seed=5)]


def test_two_processes_take_the_single_process_steps_over_the_same_rows(tiny_model_dir, tmp_path):
    """Two DDP processes, four rows each per batch: the same 16 optimizer steps as one process with batches of 8, a
    final loss within 5% of its, and an adapter that loads and differs from the start."""
    from safetensors.torch import load_file

    single_dir, single = sft.train(
        config(tiny_model_dir, 1), ModelSettings(), rows(), [], tmp_path / "one", tmp_path / "one-adapter", progress=False
    )
    adapter, stats, _ = launch.train(
        "sft", config(tiny_model_dir, 2), ModelSettings(), {"rows": rows()}, tmp_path / "two", tmp_path / "two-adapter"
    )

    assert adapter == tmp_path / "two-adapter"
    assert stats.steps == single.steps == 16
    assert stats.rows == single.rows == 64
    assert stats.final_loss == pytest.approx(single.final_loss, rel=0.05)
    ours, theirs = load_file(adapter / "adapter_model.safetensors"), load_file(single_dir / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    assert any((ours[k] - theirs[k]).abs().max() > 0 for k in ours)  # trained, not copied: gloo sums in its own order


@scale_test
def test_a_killed_launch_resumes_from_its_last_checkpoint(tiny_model_dir, tmp_path):
    """SIGKILL to the whole launch (launcher and both ranks) once a checkpoint is complete; launched again with the same
    folders, the run resumes from that checkpoint and finishes its steps."""
    cfg = config(tiny_model_dir, 2)
    cfg.training.max_steps = 40
    spec = launch.write_spec("sft", cfg, ModelSettings(), {"rows": rows()}, tmp_path / "ckpt", tmp_path / "adapter")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(launch.__file__).resolve().parents[2]))
    running = subprocess.Popen(
        launch.launch_command(2, spec, free_port()),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not list((tmp_path / "ckpt").glob("checkpoint-*/trainer_state.json")):
        assert running.poll() is None, "the launch ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint in 300 s"
        time.sleep(0.2)
    os.killpg(running.pid, signal.SIGKILL)
    running.wait()
    assert not (tmp_path / "adapter" / "adapter_model.safetensors").exists()

    adapter, stats, _ = launch.train("sft", cfg, ModelSettings(), {"rows": rows()}, tmp_path / "ckpt", tmp_path / "adapter")
    assert stats.resumed_from is not None and "checkpoint-" in stats.resumed_from
    assert stats.steps == 40
    assert (adapter / "adapter_model.safetensors").exists()


@scale_test
def test_a_failing_rank_names_the_method_and_shows_its_error(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, 2)
    cfg.model.base_model = str(tmp_path / "no-such-model")
    with pytest.raises(launch.TrainingFailed, match="sft: 2 data-parallel processes exited"):
        launch.train("sft", cfg, ModelSettings(), {"rows": rows()}, tmp_path / "ckpt", tmp_path / "adapter")


def test_batch_size_must_divide_by_the_processes():
    with pytest.raises(ValueError, match="batch_size .8. must divide by scale.train_processes .3."):
        TaskConfig.model_validate({"scale": {"train_processes": 3}})


def test_the_spec_carries_every_input_as_a_file(tmp_path):
    cfg = TaskConfig()
    given = ServiceSettings(models_dir=tmp_path / "models", sandbox_allow_weaker=True, admin_api_keys=["secret-admin-key"])
    spec_path = launch.write_spec("sft", cfg, given, {"rows": rows()[:3], "validation": []}, tmp_path, tmp_path / "out")
    spec = json.loads(spec_path.read_text())
    # every rank gets the settings this process was handed, the model layer's only: a service's keys stay out of the file
    assert ModelSettings(**spec["settings"]) == ModelSettings(models_dir=tmp_path / "models", sandbox_allow_weaker=True)
    assert "secret-admin-key" not in spec_path.read_text()
    assert [json.loads(line)["id"] for line in Path(spec["inputs"]["rows"]).read_text().splitlines()] == [r.id for r in rows()[:3]]
    assert spec["config"]["training"]["cpu_autocast"] in ("bf16", "off")  # decided once, by the parent
    assert sys.executable in launch.launch_command(2, Path(spec["stats"]), 1234)


@scale_test
def test_kd_and_dpo_train_in_two_processes(tiny_cfg, tmp_path):
    """KD (label blocks, the student's lean written once, by rank 0) and DPO (a frozen reference beside the adapter) under
    two DDP processes: each saves an adapter that loads, with the steps it planned."""
    from core.common.rows import Pair
    from core.model.calibrated import load_label_prior

    tiny_cfg.scale.train_processes = 2
    tiny_cfg.training.max_steps, tiny_cfg.training.cpu_autocast = 4, "off"
    traces = [
        {"id": f"t{i}", "prompt": f"Interest_Rate: {i}", "output": label, "label_probs": {"Good": 0.2, "Standard": 0.1, "Bad": 0.7}}
        for i, label in enumerate(["Bad", "Good", "Standard"] * 6)
    ]
    adapter, stats, counts = launch.train("kd", tiny_cfg, ModelSettings(), {"traces": traces}, tmp_path / "kd-ck", tmp_path / "kd")
    assert stats.steps == 4 and counts["validation_traces"] >= 0 and load_label_prior(adapter, tiny_cfg.labels).shape == (3,)

    pairs = [Pair(f"Interest_Rate: {i}", "Good", "Bad", "user") for i in range(16)]
    adapter, stats, _ = launch.train("dpo", tiny_cfg, ModelSettings(), {"pairs": pairs}, tmp_path / "dpo-ck", tmp_path / "dpo")
    assert stats.steps == 4 and (adapter / "adapter_model.safetensors").exists()


def test_an_accelerate_config_file_replaces_plain_ddp(tmp_path):
    plain = launch.launch_command(2, tmp_path / "spec.json", 1234)
    fsdp = launch.launch_command(2, tmp_path / "spec.json", 1234, tmp_path / "fsdp.yaml")
    assert "--multi_gpu" in plain and "--config_file" not in plain
    assert fsdp[fsdp.index("--config_file") + 1] == str(tmp_path / "fsdp.yaml") and "--multi_gpu" not in fsdp
