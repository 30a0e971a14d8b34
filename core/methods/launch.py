"""Where a method's training runs: in this process, or data-parallel under `accelerate launch` (DDP).

`scale.train_processes: N` (> 1) trains every method in N processes instead of this one: one per GPU
(NCCL), or gloo on a CPU (where it shows the path runs and resumes; two processes on two cores are no
faster than one). Each process takes `batch_size / N` rows of every batch, so the optimizer steps, the
rows each step sees and the learning-rate schedule are the ones a single process runs; rank 0 writes the
checkpoints, the best adapter seen and the adapter. A run killed mid-way (any signal, any rank) resumes
from its last complete checkpoint when it is launched again with the same folders, as a single-process
run does. Bases too large for one GPU: FSDP through an accelerate config file (`scale.accelerate_config`).

    adapter_dir, stats, counts = train("sft", cfg, settings, {"rows": rows, "validation": validation}, checkpoint_dir, out_dir)

`inputs` are the method's `train` arguments by name (sft: rows, validation; selftrain: gold, added,
validation, report; kd: traces; dpo: pairs, start_adapter; any: source). For a data-parallel run the
parent writes them into the checkpoint folder (`launch/`: the config, rows, pairs and traces as JSONL),
runs `python -m accelerate.commands.launch ... -m core.methods.launch SPEC` and reads the stats rank 0
wrote; every rank reads the same files and trains through `in_process`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from core.common.config import TaskConfig
from core.common.files import atomic_write_text, write_jsonl
from core.common.ports import free_port
from core.common.rows import Example, Pair
from core.errors import DistillError
from core.methods import dpo, kd, selftrain, sft
from core.settings import ModelSettings
from core.training.data_parallel import main_process
from core.training.sft_trainer import TrainStats, cpu_autocast

ROWS = ("rows", "validation", "gold", "added")  # the inputs that are lists of Example (`pairs`: Pair, `traces`: dict)


class TrainingFailed(DistillError, RuntimeError):
    """A data-parallel training's processes exited with an error; the message carries the end of their output."""


def launch_command(processes: int, spec: Path, port: int, config_file: Path | None = None) -> list[str]:
    """`accelerate launch` for `processes` ranks on this machine running this module on `spec`. Without a config file,
    `--multi_gpu`, accelerate's torch.distributed launcher: on a machine without GPUs the Trainer (`use_cpu`) makes it
    gloo DDP. With one (`scale.accelerate_config`: FSDP, DeepSpeed), the file says how."""
    mode = ["--config_file", str(config_file)] if config_file else ["--multi_gpu"]
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        *mode, "--num_processes", str(processes), "--num_machines", "1",
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
        "--dynamo_backend", "no",
        "-m", "core.methods.launch", str(spec),
    ]  # fmt: skip


def write_spec(method: str, cfg: TaskConfig, settings: ModelSettings, inputs: dict, checkpoint_dir: Path, out_dir: Path) -> Path:
    """What every rank reads: the config (CPU autocast decided here, once, so no rank times it differently), the
    operator's settings this process was given, the method and its inputs as files; returns the spec's path."""
    folder = checkpoint_dir / "launch"
    folder.mkdir(parents=True, exist_ok=True)
    training = cfg.training.model_copy(update={"cpu_autocast": "bf16" if cpu_autocast(cfg.training) else "off"})
    files: dict = {}
    for name, value in inputs.items():
        if isinstance(value, list):  # rows, pairs, traces: a JSONL file each
            write_jsonl(folder / f"{name}.jsonl", [item if isinstance(item, dict) else asdict(item) for item in value])
            files[name] = str(folder / f"{name}.jsonl")
        else:  # a path, a source name, a report: in the spec itself
            files[name] = str(value) if isinstance(value, Path) else value
    spec = {
        "method": method,
        "config": cfg.model_copy(update={"training": training}).model_dump(mode="json"),
        # The model layer's settings only: a service's ServiceSettings would carry its keys into this file.
        "settings": settings.model_dump(mode="json", include=set(ModelSettings.model_fields)),
        "inputs": files,
        "checkpoint_dir": str(checkpoint_dir),
        "out_dir": str(out_dir),
        "stats": str(folder / "stats.json"),  # beside the spec: `data_parallel` reads it there
    }
    atomic_write_text(folder / "spec.json", json.dumps(spec, indent=1))
    return folder / "spec.json"


def train(
    method: str, cfg: TaskConfig, settings: ModelSettings, inputs: dict, checkpoint_dir: str | Path, out_dir: str | Path
) -> tuple[Path, TrainStats, dict]:
    """Train `method` (sft | selftrain | kd | dpo) on `inputs`, in `scale.train_processes` processes; return the adapter
    folder, its stats and the method's counts (KD's rows; {} for the others)."""
    if cfg.scale.train_processes == 1:
        return in_process(method, cfg, settings, inputs, checkpoint_dir, out_dir)
    return data_parallel(method, cfg, settings, inputs, Path(checkpoint_dir), Path(out_dir), cfg.scale.train_processes)


def in_process(
    method: str, cfg: TaskConfig, settings: ModelSettings, inputs: dict, checkpoint_dir: str | Path, out_dir: str | Path
) -> tuple[Path, TrainStats, dict]:
    """The method's own `train`, in this process (every rank of a data-parallel run calls it too)."""
    folders, source = (checkpoint_dir, out_dir), {"source": inputs["source"]} if inputs.get("source") else {}
    if method == "sft":
        return *sft.train(cfg, settings, inputs["rows"], inputs.get("validation") or [], *folders, **source), {}
    if method == "selftrain":
        added, validation = inputs["added"], inputs.get("validation") or []
        return *selftrain.train(cfg, settings, inputs["gold"], added, validation, *folders, report=inputs.get("report"), **source), {}
    if method == "kd":
        return kd.train(cfg, settings, inputs["traces"], *folders, **source)
    if method == "dpo":
        return *dpo.train(cfg, settings, inputs["pairs"], *folders, start_adapter=inputs.get("start_adapter"), **source), {}
    raise ValueError(f"unknown method {method!r}; one of sft, selftrain, kd, dpo")


def data_parallel(
    method: str, cfg: TaskConfig, settings: ModelSettings, inputs: dict, checkpoint_dir: Path, out_dir: Path, processes: int
) -> tuple[Path, TrainStats, dict]:
    """`in_process` in `processes` DDP ranks started by `accelerate launch`; rank 0's results."""
    spec = write_spec(method, cfg, settings, inputs, checkpoint_dir, out_dir)
    stats_path = spec.with_name("stats.json")  # what rank 0 writes last; one from an earlier launch must not be read
    stats_path.unlink(missing_ok=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run(
        launch_command(processes, spec, free_port(), cfg.scale.accelerate_config), env=env, capture_output=True, text=True
    )
    if done.returncode != 0 or not stats_path.exists():
        tail = (done.stdout[-2000:] + "\n" + done.stderr[-4000:]).strip()
        raise TrainingFailed(f"{method}: {processes} data-parallel processes exited with {done.returncode}:\n{tail}")
    result = json.loads(stats_path.read_text())
    return Path(result["adapter_dir"]), TrainStats(**result["stats"]), result["counts"]


def _read_inputs(files: dict) -> dict:
    """The spec's inputs as `in_process` takes them."""
    readers = {name: lambda path: [Example(**r) for r in _jsonl(path)] for name in ROWS}
    readers |= {"pairs": lambda path: [Pair(**r) for r in _jsonl(path)], "traces": _jsonl}
    return {name: readers[name](value) if name in readers and value is not None else value for name, value in files.items()}


def _jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    cfg, settings = TaskConfig.model_validate(spec["config"]), ModelSettings(**spec["settings"])
    adapter_dir, stats, counts = in_process(
        spec["method"], cfg, settings, _read_inputs(spec["inputs"]), spec["checkpoint_dir"], spec["out_dir"]
    )
    if main_process():
        record = {"adapter_dir": str(adapter_dir), "stats": asdict(stats), "counts": counts}
        atomic_write_text(spec["stats"], json.dumps(record, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
