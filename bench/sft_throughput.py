"""SFT throughput of `core.sft.train_sft` vs a bare TRL SFTTrainer script, same data and settings.

Both train the embedded model with the same LoRA, batch, sequence lengths and step count; tokens/s
is (tokens in the training rows x epochs) / trainer runtime for both. Target: ratio >= 0.9.
A third side trains the same rows with `training.cpu_autocast: off` (fp32): the gain of the default
bf16 autocast on a CPU whose speed check turns it on (`core.training.sft_trainer.cpu_autocast`).

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
from core.model.loading import load_model, lora_config
from core.settings import ModelSettings
from core.training.sft_trainer import check_lengths, cpu_autocast, sft_config, sft_dataset, train_sft


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
        "note": "distill-slm's time includes loading the model and checking row lengths; the bare script's does not",
    }
    figures["target_within_10pct"] = figures["ratio_distill_slm_over_bare"] >= 0.9
    return figures
