"""train_sft: one coarse task per training run; resumes from its last checkpoint on retry or rerun."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from prefect import get_run_logger, task

from core.config import TaskConfig
from core.data import load_rows
from core.dpo import classification_pairs, extraction_pairs, load_pairs, train_dpo
from core.evaluate import decoder_for, extraction_decoder
from core.kd import train_kd
from core.models import load_adapter, load_model
from core.sft import train_sft
from core.traces import TraceStore


def run_dir(cfg: TaskConfig, method: str, fingerprint: dict) -> Path:
    """Same data and settings -> same folder, so a crashed run finds its checkpoints again."""
    key = json.dumps([fingerprint, cfg.training.model_dump(), cfg.model.model_dump(), cfg.instruction], sort_keys=True, default=str)
    return cfg.work_dir / cfg.name / f"{method}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


@task(name="train_sft", retries=1, retry_delay_seconds=5)
def train_sft_task(cfg: TaskConfig, train_path: str, fingerprint: dict) -> str:
    """Train an SFT adapter; return the folder it was saved to."""
    logger = get_run_logger()
    folder = run_dir(cfg, "sft", fingerprint)
    adapter_dir, done = folder / "adapter", folder / "adapter" / "train_stats.json"
    if done.exists():
        logger.info("adapter already trained at %s; skipping", adapter_dir)
        return str(adapter_dir)
    rows = load_rows(cfg, train_path)
    adapter_dir, stats = train_sft(cfg, rows, folder / "checkpoints", adapter_dir, source=train_path)
    done.write_text(json.dumps(asdict(stats), indent=2))  # written last: marks the adapter complete
    logger.info("SFT: %d steps, %.0f tokens/s, final loss %s", stats.steps, stats.tokens_per_s, stats.final_loss)
    return str(adapter_dir)


@task(name="train_kd", retries=1, retry_delay_seconds=5)
def train_kd_task(cfg: TaskConfig, traces_file: str, fingerprint: dict) -> str:
    """Train a KD adapter on the usable teacher traces of the unlabeled pool; return its folder."""
    logger = get_run_logger()
    store = TraceStore(traces_file)
    store.close()
    traces, failed = store.usable(), len(store.traces) - len(store.usable())
    if not traces:
        raise ValueError(f"{traces_file}: no usable teacher traces ({failed} failed): nothing to distill")
    key = {"traces": sorted(t["input_sha256"] for t in traces), "kd": cfg.kd.model_dump(), **fingerprint}
    folder = run_dir(cfg, "kd", key)
    adapter_dir, done = folder / "adapter", folder / "adapter" / "train_stats.json"
    if done.exists():
        logger.info("adapter already trained at %s; skipping", adapter_dir)
        return str(adapter_dir)
    logger.info("KD on %d teacher traces (%d failed traces left out)", len(traces), failed)
    adapter_dir, stats = train_kd(cfg, traces, folder / "checkpoints", adapter_dir, source=traces_file)
    done.write_text(json.dumps(asdict(stats), indent=2))
    logger.info("KD: %d steps, %.0f tokens/s, final loss %s", stats.steps, stats.tokens_per_s, stats.final_loss)
    return str(adapter_dir)


@task(name="train_dpo", retries=1, retry_delay_seconds=5)
def train_dpo_task(
    cfg: TaskConfig, train_path: str, start_adapter: str | None, fingerprint: dict, teacher_traces_file: str | None = None
) -> str:
    """Train a DPO adapter on user pairs (`data.preferences`) or pairs built on-policy; return its folder."""
    logger = get_run_logger()
    key = {"start": start_adapter, "dpo": cfg.dpo.model_dump(), "teacher": teacher_traces_file, **fingerprint}
    folder = run_dir(cfg, "dpo", key)
    adapter_dir, done = folder / "adapter", folder / "adapter" / "train_stats.json"
    if done.exists():
        logger.info("adapter already trained at %s; skipping", adapter_dir)
        return str(adapter_dir)
    if cfg.data.preferences is not None:
        labels = cfg.labels if cfg.type == "classification" else None
        pairs, source = load_pairs(cfg.data.preferences, labels), str(cfg.data.preferences)
        counts = {"user": len(pairs)}
    else:
        traces = None
        if teacher_traces_file:
            store = TraceStore(teacher_traces_file)
            store.close()
            traces = store.usable()
        model, tokenizer = load_model(cfg.model)
        if start_adapter:
            model = load_adapter(model, start_adapter, name="start")
            model.set_adapter("start")
        if cfg.type == "idp":
            decoder = extraction_decoder(cfg, model, tokenizer)
            pairs, counts = extraction_pairs(cfg, load_rows(cfg, train_path), decoder, cfg.training.seed)
        else:
            decoder = decoder_for(cfg, model, tokenizer, adapter=start_adapter)
            pairs, counts = classification_pairs(cfg, load_rows(cfg, train_path), decoder, traces)
        source = f"pairs built on-policy from {train_path}"
        del model, decoder
    logger.info("DPO pairs: %s", counts)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pairs.json").write_text(json.dumps(counts, indent=2))
    adapter_dir, stats = train_dpo(cfg, pairs, folder / "checkpoints", adapter_dir, start_adapter=start_adapter, source=source)
    (adapter_dir / "pairs.json").write_text(json.dumps(counts, indent=2))
    done.write_text(json.dumps(asdict(stats), indent=2))
    logger.info("DPO: %d steps, final loss %s", stats.steps, stats.final_loss)
    return str(adapter_dir)
