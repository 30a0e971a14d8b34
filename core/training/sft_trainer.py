"""Supervised fine-tuning of a LoRA (QLoRA on a 4-bit base) adapter with TRL's SFTTrainer.

Rows become prompt/completion chats in exactly the format the calibrated decoder scores, so the
loss falls on the label tokens only (TRL's completion-only loss). Checkpoints are written every
`save_steps`; calling `train_sft` again with the same `checkpoint_dir` resumes from the last one.

    adapter_dir, stats = train_sft(cfg, ModelSettings(), train_rows, checkpoint_dir="runs/.work/sft", out_dir="adapter/")
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import PeftModel
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import SFTConfig, SFTTrainer

from core.common.config import TaskConfig, TrainingConfig
from core.common.prompts import completion_chat, task_messages
from core.common.rows import Example
from core.errors import DataError
from core.model.fast_decode import matmul_speedup
from core.model.loading import load_model, lora_config
from core.settings import ModelSettings
from core.training.completion import CompletionStep, completion_forward
from core.training.data_parallel import data_parallel, main_process
from core.training.frozen_prefix import FrozenPrefixCache
from core.training.recipe import plan_steps
from core.training.validation import BestOnValidation

# States of the frozen layers kept per distinct row (`core.training.frozen_prefix`): the embedded model's ~300-row small
# file at ~100 tokens takes ~70 MiB; the demo's 2,400 rows ~660 MiB, so part of a large split is computed every pass.
FROZEN_CACHE_BYTES = 512 * 2**20


class CompletionSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer, projecting to the vocabulary only where the loss is taken (`core.training.completion`), and
    training from the frozen layers' cached output where the adapter leaves the bottom layers frozen."""

    _frozen: FrozenPrefixCache | None | bool = False  # False: not decided yet (on the first training batch)

    def _training_forward(self, model, inputs: dict, real: torch.Tensor | None = None):
        """What runs the training forward of `inputs` (the model's arguments): the cached frozen-layer path once it has
        given the first batch the model's own logits, else the model. `real`: the real columns where the attention mask
        is not the batch's 2D padding mask (KD's label blocks). Outside training (validation, evaluation): the model."""
        if not model.training:
            return model
        if self._frozen is False:
            unwrapped = self.accelerator.unwrap_model(model)
            cache = FrozenPrefixCache.for_model(unwrapped, FROZEN_CACHE_BYTES)
            batch = {k: v for k, v in inputs.items() if k != "labels"}
            self._frozen = cache if cache is not None and cache.agrees(model, **batch, real=real, use_cache=False) else None
            log.info("training: frozen-layer cache %s", "on" if self._frozen else "off")
        return functools.partial(self._frozen.forward, model, real=real) if self._frozen else model

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        step = completion_forward(self._training_forward(model, inputs), inputs)
        n_tokens = num_items_in_batch if num_items_in_batch is not None else step.scored.sum()
        loss = F.cross_entropy(
            step.logits.reshape(-1, step.logits.size(-1)), step.targets.reshape(-1), ignore_index=-100, reduction="sum"
        ) / torch.as_tensor(n_tokens, device=step.logits.device).clamp(min=1)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            # The count is every rank's tokens and DDP averages the ranks' gradients: scaled back as Trainer.compute_loss
            # scales, so N processes take the single process's step (without it, half the gradient on two).
            loss = loss * self.accelerator.num_processes
        self.log_token_accuracy(model, step)
        return (loss, step.outputs) if return_outputs else loss

    def log_token_accuracy(self, model, step: CompletionStep) -> None:
        self._metrics["train" if model.training else "eval"]["mean_token_accuracy"].append(step.token_accuracy())


@dataclass
class TrainStats:
    steps: int
    train_runtime_s: float
    tokens: int
    tokens_per_s: float
    final_loss: float | None
    resumed_from: str | None
    planned_steps: int = 0
    epochs: float = 0.0
    best_step: int | None = None  # the step whose adapter was kept (validation), None = the last
    learning_curve: list[dict] = field(default_factory=list)  # [{"step", "value"}] of the validation metric
    rows: int = 0  # training rows, minority classes repeated
    distinct_rows: int = 0  # distinct inputs among them: what the adapter learned from


# (model being trained) -> the validation split's primary metric, higher is better
Validate = Callable[[torch.nn.Module], float]

log = logging.getLogger(__name__)


@functools.cache
def _bf16_is_faster() -> bool:
    # A training step's products are [batch x tokens, 576] by [576, 1536]-sized weights: 256 rows is their shape.
    speedup = matmul_speedup(torch.bfloat16, rows=256, out_features=1536, repeats=10)
    log.info("training: bf16 products %.2fx fp32 on this CPU; autocast %s", speedup, "on" if speedup >= 1.3 else "off")
    return speedup >= 1.3


def cpu_autocast(t: TrainingConfig) -> bool:
    """Whether training on a CPU computes in bf16 autocast (`training.cpu_autocast`; 'auto' asks a speed check, once).

    Measured here (2 cores, AMX): a KD/SFT step of 8 rows x ~110 tokens 2.61 s fp32, 1.75 s bf16 autocast with eager
    attention (2.09 s with SDPA, whose CPU backward is slow in bf16); the 14-step losses agreed to 0.007.
    """
    return t.cpu_autocast == "bf16" or (t.cpu_autocast == "auto" and _bf16_is_faster())


def sft_dataset(rows: list[Example], instruction: str) -> Dataset:
    return Dataset.from_list([completion_chat(instruction, row.text, row.label) for row in rows])


def check_lengths(rows: list[Example], instruction: str, tokenizer: PreTrainedTokenizerBase, max_length: int, source: str) -> int:
    """Refuse rows longer than `max_length` tokens (TRL would truncate them silently); return the total tokens."""
    total = 0
    for number, row in enumerate(rows, start=1):
        chat = task_messages(instruction, row.text) + [{"role": "assistant", "content": row.label}]
        n = len(tokenizer(tokenizer.apply_chat_template(chat, tokenize=False), add_special_tokens=False).input_ids)
        if n > max_length:
            raise DataError(source, number, "text", f"row {row.id} is {n} tokens, over training.max_length={max_length}")
        total += n
    return total


def trainer_args(cfg: TaskConfig, checkpoint_dir: str | Path, n_rows: int, progress: bool = True, epochs: float | None = None) -> dict:
    """The training arguments every method shares (SFT, KD, DPO): batch, schedule (`core.training.recipe`), checkpoints, device."""
    t = cfg.training
    on_gpu = torch.cuda.is_available() and cfg.model.device != "cpu"
    plan = plan_steps(t, n_rows, epochs)
    processes = data_parallel()[1]
    return dict(
        output_dir=str(checkpoint_dir),
        # Data-parallel: each process takes its share of every batch, so the optimizer steps and their rows stay the same.
        per_device_train_batch_size=max(1, t.batch_size // processes),
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=plan.epochs,
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
        bf16=cfg.model.precision == "bf16" if on_gpu else cpu_autocast(t),
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        # TRL turns this on by default; on a 135M model it only costs time (a second forward).
        gradient_checkpointing=False,
    )


def sft_config(cfg: TaskConfig, checkpoint_dir: str | Path, n_rows: int, progress: bool = True, epochs: float | None = None) -> SFTConfig:
    return SFTConfig(**trainer_args(cfg, checkpoint_dir, n_rows, progress, epochs))


def last_complete_checkpoint(checkpoint_dir: str | Path) -> str | None:
    """The newest checkpoint the Trainer finished writing, or None; newer, half-written ones are removed.

    The Trainer fills `checkpoint-N/` in place and writes `trainer_state.json` last: a run killed while saving
    leaves a folder without it, which `get_last_checkpoint` would pick and the resume would fail on.
    """
    folder = Path(checkpoint_dir)
    if not folder.exists():
        return None
    steps = sorted(
        (int(p.name.rsplit("-", 1)[1]), p) for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.name.rsplit("-", 1)[1].isdigit()
    )
    for _, path in reversed(steps):
        if (path / "trainer_state.json").exists():
            return str(path)
        # killed mid-save: never resumed from, and in the way of the step's next save (every data-parallel rank looks)
        shutil.rmtree(path, ignore_errors=True)
    return None


def run_training(
    cfg: TaskConfig,
    settings: ModelSettings,
    dataset: Dataset,
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    progress: bool,
    check: Callable[[PreTrainedTokenizerBase], int],
    make_trainer: Callable[..., Trainer] = CompletionSFTTrainer,
    args: TrainingArguments | None = None,
    start_adapter: str | Path | None = None,
    validate: Validate | None = None,
) -> tuple[Path, TrainStats]:
    """The training loop every method shares: load, check lengths, train or resume, save the adapter.

    A fresh LoRA adapter is attached, or training continues from `start_adapter`. With `validate`,
    the validation metric is taken every `eval_steps`, training stops early when it no longer
    improves, and the best adapter seen is the one saved (`core.training.validation`).
    """
    torch.manual_seed(cfg.training.seed)
    args = args or sft_config(cfg, checkpoint_dir, len(dataset), progress)
    model, tokenizer = load_model(cfg.model, settings)
    if args.bf16 and args.use_cpu:
        model.set_attn_implementation("eager")  # SDPA's CPU backward in bf16 is slower than eager attention's
    tokens = check(tokenizer)
    if start_adapter is not None:
        model, peft_config = PeftModel.from_pretrained(model, str(start_adapter), is_trainable=True), None
    else:
        peft_config = lora_config(cfg.training.lora, model)
    trainer = make_trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
    plan = plan_steps(cfg.training, len(dataset), args.num_train_epochs)
    best = None
    if validate is not None:
        best = BestOnValidation(validate, plan.eval_steps, cfg.training.patience, checkpoint_dir, not_before=plan.steps // 2)
        trainer.add_callback(best)
    resume = last_complete_checkpoint(checkpoint_dir)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    elapsed = time.perf_counter() - start
    cache = getattr(trainer, "_frozen", None)
    if cache:  # a bound too small for the rows leaves the rest computed at every pass: worth seeing
        log.info(
            "training: frozen-layer states of %d rows held, %.0f of %.0f MiB",
            len(cache.states),
            cache.bytes / 2**20,
            cache.max_bytes / 2**20,
        )
    out_dir = Path(out_dir)
    if main_process():
        # Only the trained adapter: DPO keeps a frozen reference copy beside it that is not the product.
        trainer.model.save_pretrained(str(out_dir), selected_adapters=["default"])
        if best is not None and best.best is not None and best.best["step"] != trainer.state.global_step:
            for item in best.best_dir.iterdir():  # the best adapter seen replaces the last one
                shutil.copy2(item, out_dir / item.name)
        tokenizer.save_pretrained(str(out_dir))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    epochs_done = trainer.state.epoch or trainer.args.num_train_epochs
    processed = int(tokens * epochs_done)
    stats = TrainStats(
        steps=trainer.state.global_step,
        train_runtime_s=result.metrics.get("train_runtime", elapsed),
        tokens=processed,
        tokens_per_s=processed / max(elapsed, 1e-9),
        final_loss=losses[-1] if losses else None,
        resumed_from=resume,
        planned_steps=plan.steps,
        epochs=plan.epochs,
        best_step=best.best["step"] if best is not None and best.best else None,
        learning_curve=best.curve if best is not None else [],
        rows=len(dataset),
        distinct_rows=len({json.dumps(p, sort_keys=True) for p in dataset["prompt"]}) if "prompt" in dataset.column_names else len(dataset),
    )
    if stats.learning_curve and main_process():
        curve = {"metric": cfg.promotion.primary_metric, "curve": stats.learning_curve, "rows": getattr(validate, "rows", None)}
        (out_dir / "learning_curve.json").write_text(json.dumps(curve))
    return out_dir, stats


def train_sft(
    cfg: TaskConfig,
    settings: ModelSettings,
    rows: list[Example],
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    progress: bool = True,
    source: str = "<train split>",
    validate: Validate | None = None,
) -> tuple[Path, TrainStats]:
    """Train (or resume) an SFT adapter on `rows`; save the adapter (the best on validation, with `validate`) to `out_dir`."""
    return run_training(
        cfg,
        settings,
        sft_dataset(rows, cfg.instruction),
        checkpoint_dir,
        out_dir,
        progress,
        check=lambda tokenizer: check_lengths(rows, cfg.instruction, tokenizer, cfg.training.max_length, source),
        validate=validate,
    )
