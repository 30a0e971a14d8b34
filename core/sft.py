"""Supervised fine-tuning of a LoRA (QLoRA on a 4-bit base) adapter with TRL's SFTTrainer.

Rows become prompt/completion chats in exactly the format the calibrated decoder scores, so the
loss falls on the label tokens only (TRL's completion-only loss). Checkpoints are written every
`save_steps`; calling `train_sft` again with the same `checkpoint_dir` resumes from the last one.

    adapter_dir, stats = train_sft(cfg, train_rows, checkpoint_dir="runs/.work/sft", out_dir="adapter/")
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from core.calibrated import classification_messages
from core.config import TaskConfig
from core.data import DataError, Example
from core.models import load_model, lora_config


@dataclass
class TrainStats:
    steps: int
    train_runtime_s: float
    tokens: int
    tokens_per_s: float
    final_loss: float | None
    resumed_from: str | None


def sft_dataset(rows: list[Example], instruction: str) -> Dataset:
    return Dataset.from_list(
        [
            {
                "prompt": classification_messages(instruction, row.text),
                "completion": [{"role": "assistant", "content": row.label}],
            }
            for row in rows
        ]
    )


def check_lengths(rows: list[Example], instruction: str, tokenizer: PreTrainedTokenizerBase, max_length: int, source: str) -> int:
    """Refuse rows longer than `max_length` tokens (TRL would truncate them silently); return the total tokens."""
    total = 0
    for number, row in enumerate(rows, start=1):
        chat = classification_messages(instruction, row.text) + [{"role": "assistant", "content": row.label}]
        n = len(tokenizer.apply_chat_template(chat, tokenize=True))
        if n > max_length:
            raise DataError(source, number, "text", f"row {row.id} is {n} tokens, over training.max_length={max_length}")
        total += n
    return total


def sft_config(cfg: TaskConfig, checkpoint_dir: str | Path, progress: bool = True) -> SFTConfig:
    t = cfg.training
    on_gpu = torch.cuda.is_available() and cfg.model.device != "cpu"
    return SFTConfig(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=t.warmup_ratio,
        logging_steps=5,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,
        max_length=t.max_length,
        seed=t.seed,
        data_seed=t.seed,
        report_to=[],
        use_cpu=not on_gpu,
        bf16=on_gpu and cfg.model.precision == "bf16",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        gradient_checkpointing=False,
    )


def train_sft(
    cfg: TaskConfig,
    rows: list[Example],
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    progress: bool = True,
    source: str = "<train split>",
) -> tuple[Path, TrainStats]:
    """Train (or resume) an SFT adapter on `rows`; save the adapter to `out_dir`."""
    torch.manual_seed(cfg.training.seed)
    model, tokenizer = load_model(cfg.model)
    tokens = check_lengths(rows, cfg.instruction, tokenizer, cfg.training.max_length, source)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(cfg, checkpoint_dir, progress),
        train_dataset=sft_dataset(rows, cfg.instruction),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.training.lora),
    )
    resume = get_last_checkpoint(str(checkpoint_dir)) if Path(checkpoint_dir).exists() else None
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    elapsed = time.perf_counter() - start
    out_dir = Path(out_dir)
    trainer.save_model(str(out_dir))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    epochs_done = trainer.state.epoch or cfg.training.epochs
    processed = int(tokens * epochs_done)
    stats = TrainStats(
        steps=trainer.state.global_step,
        train_runtime_s=result.metrics.get("train_runtime", elapsed),
        tokens=processed,
        tokens_per_s=processed / max(elapsed, 1e-9),
        final_loss=losses[-1] if losses else None,
        resumed_from=resume,
    )
    return out_dir, stats
