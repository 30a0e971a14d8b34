"""One Prefect task per training method (`core.methods`): each reads its inputs from the paths the flow passes, trains
into its run folder once (a rerun after a crash resumes from the checkpoints; after success it trains nothing) and
returns the adapter folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from prefect import get_run_logger, task

from core.common.config import TaskConfig
from core.common.files import atomic_write_text, fsync_folder
from core.common.rows import json_sha256, text_sha256
from core.errors import DataError
from core.kinds import for_config
from core.kinds.data import load_rows
from core.methods import dpo, kd, launch, run_dir, selftrain
from core.settings import ModelSettings
from core.teachers.traces import TraceStore
from core.training.sft_trainer import TrainStats


def trained_once(folder: Path, method: str, train: Callable[[Path, Path], tuple[Path, TrainStats]]) -> str:
    """Train into `folder/adapter` unless a finished adapter is already there; return the adapter folder.

    `train(checkpoint_dir, adapter_dir)` resumes from its checkpoints; `train_stats.json`, written last,
    marks the adapter complete, so a rerun after a crash trains again and a rerun after success does not.
    """
    logger = get_run_logger()
    adapter_dir, done = folder / "adapter", folder / "adapter" / "train_stats.json"
    if done.exists():
        logger.info("%s adapter already trained at %s; skipping", method, adapter_dir)
        return str(adapter_dir)
    adapter_dir, stats = train(folder / "checkpoints", adapter_dir)
    fsync_folder(adapter_dir)  # the adapter's files are on disk before the marker says they are complete
    atomic_write_text(done, json.dumps(asdict(stats), indent=2))
    logger.info(
        "%s: %d of %d planned steps (%.3g epochs), %.0f tokens/s, final loss %s, kept step %s",
        method,
        stats.steps,
        stats.planned_steps,
        stats.epochs,
        stats.tokens_per_s,
        stats.final_loss,
        stats.best_step or stats.steps,
    )
    return str(adapter_dir)


def _validation(cfg: TaskConfig, settings: ModelSettings, path: str | None, fingerprint: dict) -> list:
    return load_rows(for_config(cfg, settings), path) if path and fingerprint.get("n_validation") else []


@task(name="train_sft", retries=1, retry_delay_seconds=5)
def train_sft_task(cfg: TaskConfig, train_path: str, fingerprint: dict, validation_path: str | None = None) -> str:
    """Train an SFT adapter, keeping the best step on the validation rows (when there are any); return its folder."""
    settings = ModelSettings()  # the operator's, on the machine this task runs on

    def train(checkpoints: Path, out: Path) -> tuple[Path, TrainStats]:
        validation = _validation(cfg, settings, validation_path, fingerprint)
        inputs = {"rows": load_rows(for_config(cfg, settings), train_path), "validation": validation}
        adapter_dir, stats, _ = launch.train("sft", cfg, settings, inputs | {"source": train_path}, checkpoints, out)
        return adapter_dir, stats

    return trained_once(run_dir(cfg, "sft", fingerprint), "SFT", train)


@task(name="train_selftrain", retries=1, retry_delay_seconds=5)
def train_selftrain_task(
    cfg: TaskConfig,
    train_path: str,
    validation_path: str,
    pool_traces_file: str,
    validation_traces_file: str,
    fingerprint: dict,
    labeler_choice: dict | None = None,
) -> str:
    """Train again on the gold rows plus the SFT labeler's confident pool answers; return the adapter folder."""
    settings = ModelSettings()  # the operator's, on the machine this task runs on
    validation = _validation(cfg, settings, validation_path, fingerprint)
    pool_store, checked_store = TraceStore.read(pool_traces_file), TraceStore.read(validation_traces_file)
    added, report = selftrain.select(cfg, settings, validation, checked_store.traces, list(pool_store.traces.values()))
    get_run_logger().info("self-training: %s", report)
    folder = run_dir(cfg, "selftrain", {"added": sorted(text_sha256(r.text) + r.label for r in added), **fingerprint})

    def train(checkpoints: Path, out: Path) -> tuple[Path, TrainStats]:
        inputs = {"gold": load_rows(for_config(cfg, settings), train_path), "added": added, "validation": validation}
        inputs |= {"report": report | {"labeler_choice": labeler_choice}, "source": f"{train_path} + {pool_traces_file}"}
        adapter_dir, stats, _ = launch.train("selftrain", cfg, settings, inputs, checkpoints, out)
        return adapter_dir, stats

    return trained_once(folder, "self-training", train)


@task(name="train_kd", retries=1, retry_delay_seconds=5)
def train_kd_task(cfg: TaskConfig, traces_file: str, fingerprint: dict) -> str:
    """Train a KD adapter on the usable teacher traces of the unlabeled pool; return its folder."""
    logger = get_run_logger()
    settings = ModelSettings()  # the operator's, on the machine this task runs on
    store = TraceStore.read(traces_file)
    traces, failed = store.usable(), len(store.traces) - len(store.usable())
    if not traces:
        raise DataError(traces_file, None, None, f"no usable teacher traces ({failed} failed): nothing to distill")

    def train(checkpoints: Path, out: Path) -> tuple[Path, TrainStats]:
        logger.info("KD on %d teacher traces (%d failed traces left out)", len(traces), failed)
        adapter_dir, stats, counts = launch.train("kd", cfg, settings, {"traces": traces, "source": traces_file}, checkpoints, out)
        logger.info("KD rows: %s", counts)
        return adapter_dir, stats

    return trained_once(kd.run_folder(cfg, traces, fingerprint), "KD", train)


@task(name="train_dpo", retries=1, retry_delay_seconds=5)
def train_dpo_task(
    cfg: TaskConfig, train_path: str, start_adapter: str | None, fingerprint: dict, teacher_traces_file: str | None = None
) -> str:
    """Train a DPO adapter on user pairs (`data.preferences`) or pairs built on-policy; return its folder."""
    traces_sha256 = json_sha256(sorted(map(str, TraceStore.read(teacher_traces_file).usable()))) if teacher_traces_file else None
    key = {"start": start_adapter, "dpo": cfg.dpo.model_dump(), "teacher": teacher_traces_file, "traces_sha256": traces_sha256}
    folder = run_dir(cfg, "dpo", key | fingerprint)
    settings = ModelSettings()  # the operator's, on the machine this task runs on

    def train(checkpoints: Path, out: Path) -> tuple[Path, TrainStats]:
        traces = TraceStore.read(teacher_traces_file).usable() if teacher_traces_file else None
        pairs, counts, source = dpo.pairs_for(cfg, settings, load_rows(for_config(cfg, settings), train_path), start_adapter, traces)
        get_run_logger().info("DPO pairs: %s", counts)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "pairs.json").write_text(json.dumps(counts, indent=2))
        inputs = {"pairs": pairs, "start_adapter": start_adapter, "source": source}
        adapter_dir, stats, _ = launch.train("dpo", cfg, settings, inputs, checkpoints, out)
        (adapter_dir / "pairs.json").write_text(json.dumps(counts, indent=2))
        return adapter_dir, stats

    return trained_once(folder, "DPO", train)
