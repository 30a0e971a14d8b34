"""SFT throughput of `core.sft.train_sft` vs a bare TRL SFTTrainer script, same data and settings.

Both train the embedded model with the same LoRA, batch, sequence lengths and step count; tokens/s
is (tokens in the training rows x epochs) / trainer runtime for both. Target: ratio >= 0.9.
A third side trains the same rows with `training.cpu_autocast: off` (fp32): the gain of the default
bf16 autocast on a CPU whose speed check turns it on (`core.training.sft_trainer.cpu_autocast`).
Two more train KD (each row with its label blocks and the teacher's label distribution) over a few
distinct rows passed over five times, as KD's plan passes over a pool: once from the frozen layers'
cached output (the default) and once from the tokens (`core.training.frozen_prefix`).

    distill-slm bench sft-throughput [--quick] [--json]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from trl import SFTTrainer

from bench.calibrated import eval_rows
from core.common.config import TaskConfig
from core.common.prompts import task_messages
from core.common.rows import Example
from core.model.loading import load_model, lora_config
from core.settings import ModelSettings
from core.training import sft_trainer
from core.training.kd_trainer import train_kd
from core.training.sft_trainer import check_lengths, cpu_autocast, sft_config, sft_dataset, train_sft

# KD's default plan passes over its pool about five times (kd.min_steps 1,250 over ~2,000 balanced answers).
KD_PASSES = 5


def bare_trl(cfg: TaskConfig, rows, out: Path) -> float:
    """What a user would write by hand: SFTTrainer + LoRA on the same rows. Returns runtime (s)."""
    torch.manual_seed(cfg.training.seed)
    model, tokenizer = load_model(cfg.model, ModelSettings())
    trainer = SFTTrainer(
        model=model,
        args=sft_config(cfg, out, len(rows), progress=False),
        train_dataset=sft_dataset(rows, cfg.instruction),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.training.lora, model),
    )
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def kd_seconds(cfg: TaskConfig, rows: list[Example], out: Path, cached: bool) -> float:
    """KD over `rows` passed over KD_PASSES times (the teacher 90% sure of each gold label), with or without the
    frozen-layer cache. Returns the wall time (s), model loading included as on the other sides."""
    kd_rows = []
    for row in rows:
        targets = [0.1 / (len(cfg.labels) - 1)] * len(cfg.labels)
        targets[cfg.labels.index(row.label)] = 0.9
        kd_rows.append(
            {
                "prompt": task_messages(cfg.instruction, row.text),
                "completion": [{"role": "assistant", "content": row.label}],
                "label_targets": targets,
            }
        )
    kd_cfg = cfg.model_copy(deep=True)
    kd_cfg.training.max_steps = KD_PASSES * len(rows) // cfg.training.batch_size
    bound = sft_trainer.FROZEN_CACHE_BYTES
    sft_trainer.FROZEN_CACHE_BYTES = bound if cached else 0
    try:
        start = time.perf_counter()
        train_kd(kd_cfg, ModelSettings(), kd_rows * KD_PASSES, rows, out / "ckpt", out / "adapter", labels=cfg.labels, progress=False)
        return time.perf_counter() - start
    finally:
        sft_trainer.FROZEN_CACHE_BYTES = bound


def run(quick: bool = False) -> dict:
    cfg = TaskConfig()
    steps = 2 if quick else 12
    cfg.training.max_steps = steps
    cfg.training.save_steps = 10_000  # no checkpoint I/O inside the timed window, on either side
    rows = eval_rows(steps * cfg.training.batch_size // len(cfg.labels) + 1)[: steps * cfg.training.batch_size]
    _, tokenizer = load_model(cfg.model, ModelSettings())
    tokens = check_lengths(rows, cfg.instruction, tokenizer, cfg.training.max_length, "bench")
    with tempfile.TemporaryDirectory() as tmp:
        bare_s = bare_trl(cfg, rows, Path(tmp) / "bare")
        start = time.perf_counter()
        train_sft(cfg, ModelSettings(), rows, Path(tmp) / "ours-ckpt", Path(tmp) / "ours", progress=False)
        ours_s = time.perf_counter() - start
        fp32 = cfg.model_copy(deep=True)
        fp32.training.cpu_autocast = "off"
        start = time.perf_counter()
        train_sft(fp32, ModelSettings(), rows, Path(tmp) / "fp32-ckpt", Path(tmp) / "fp32", progress=False)
        fp32_s = time.perf_counter() - start
        kd_rows = rows[: 16 if quick else 48]
        kd_cached_s = kd_seconds(cfg, kd_rows, Path(tmp) / "kd-cached", cached=True)
        kd_tokens_s = kd_seconds(cfg, kd_rows, Path(tmp) / "kd-tokens", cached=False)
    figures = {
        "steps": steps,
        "rows": len(rows),
        "tokens": tokens,
        "bare_trl_tokens_per_s": round(tokens / bare_s, 1),
        "distill_slm_tokens_per_s": round(tokens / ours_s, 1),
        "ratio_distill_slm_over_bare": round(bare_s / ours_s, 3),
        "autocast": cpu_autocast(cfg.training),
        "fp32_tokens_per_s": round(tokens / fp32_s, 1),
        "speedup_default_over_fp32": round(fp32_s / ours_s, 3),
        "kd_rows": f"{len(kd_rows)} distinct x {KD_PASSES} passes",
        "kd_from_tokens_s": round(kd_tokens_s, 1),
        "kd_frozen_layer_cache_s": round(kd_cached_s, 1),
        "kd_speedup_cache_over_tokens": round(kd_tokens_s / kd_cached_s, 3),
        "note": "distill-slm's time includes loading the model and checking row lengths; the bare script's does not",
    }
    figures["target_within_10pct"] = figures["ratio_distill_slm_over_bare"] >= 0.9
    return figures
