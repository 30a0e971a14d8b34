"""Preference optimisation (DPO) of a LoRA adapter with TRL's DPOTrainer.

Pairs come from the user (`prompt`, `chosen`, `rejected` JSONL; for classification `prompt` is the
input text and the sides are labels) or are built on-policy by the task kind (`core.kinds`): chosen
= the gold answer (or the teacher's), rejected = the student's own wrong answer.

The reference model costs no second copy of the weights: from scratch, it is the base with the
adapter disabled; from an SFT adapter (SFT -> DPO), TRL adds a frozen copy of that adapter named
"ref" beside the trainable one (a few MB of LoRA weights).

    pairs, counts = kind.preference_pairs(train_rows, decoder)      # or load_pairs(path, labels)
    adapter_dir, stats = train_dpo(cfg, ModelSettings(), pairs, checkpoint_dir, out_dir, start_adapter="runs/.../sft/v0001")
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
from datasets import Dataset, load_from_disk
from peft import PeftModel
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import DPOConfig, DPOTrainer
from trl.trainer.utils import FusedCausalLMOutput

from core.common.config import TaskConfig
from core.common.files import read_records
from core.common.prompts import completion_chat, render_prompt
from core.common.rows import Pair, json_sha256
from core.errors import DataError
from core.settings import ModelSettings
from core.training.data_parallel import data_parallel, main_process
from core.training.sft_trainer import TrainStats, run_training, trainer_args

# Model configs whose logits are transformed before the softmax: TRL's own head handles them, ours does not try to.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")
_POSITIONS_PER_CHUNK = 256  # label positions projected at once: 256 x 49k fp32 logits = 50 MB, recomputed in backward


def _label_scores(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Log-prob of each target and, without gradient, the statistics TRL's metrics read (`FusedCausalLMOutput`)."""
    logits = torch.nn.functional.linear(hidden, weight, bias).float()
    log_softmax = logits.log_softmax(-1)
    with torch.no_grad():
        entropy = -(log_softmax.exp() * log_softmax).sum(-1)
        log_sum_sq_probs = (2 * log_softmax).logsumexp(-1)
        is_top1 = logits.argmax(-1) == targets  # argmax takes the first maximum, as TRL's head does
    return log_softmax.gather(-1, targets.unsqueeze(-1)).squeeze(-1), entropy, log_sum_sq_probs, logits.detach().mean(-1), is_top1


def completion_lm_head(model: PreTrainedModel) -> bool:
    """Make `model(..., labels=, fused_lm_head=True)` project only the labelled positions; False where it cannot.

    `trl.add_fused_lm_head` documents that protocol (a `FusedCausalLMOutput` of per-token log-probs, zero where
    the label is -100); TRL's own head keeps it, but off CUDA/XPU it projects every position (fixed tile shapes
    for compilers such as Neuron's). On CPU that is the 49k-token vocabulary over whole prompts for one to three
    label tokens a row. This forward keeps the protocol and projects the labelled positions only, in chunks
    recomputed in the backward pass so memory stays bounded for long completions; anything else (no fused
    head, shifted labels, MoE router losses) goes to TRL's forward unchanged.
    """
    text_config = model.config.get_text_config()
    if any(getattr(text_config, name, None) is not None for name in _LOGIT_TRANSFORMS):
        return False
    trl_forward = model.forward

    @functools.wraps(trl_forward)
    def forward(*args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head or labels is None or shift_labels is not None or kwargs.get("output_router_logits"):
            return trl_forward(
                *args,
                fused_lm_head=fused_lm_head,
                labels=labels,
                shift_labels=shift_labels,
                num_items_in_batch=num_items_in_batch,
                **kwargs,
            )
        kwargs["use_cache"] = False
        hidden = model.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        labels = labels[:, 1:].to(hidden.device)
        mask = labels != -100
        head = model.get_output_embeddings()
        picked, targets = hidden[mask], labels[mask]
        chunks = [
            checkpoint(
                _label_scores,
                picked[i : i + _POSITIONS_PER_CHUNK],
                head.weight,
                head.bias,
                targets[i : i + _POSITIONS_PER_CHUNK],
                use_reentrant=False,
            )
            for i in range(0, len(targets), _POSITIONS_PER_CHUNK)
        ] or [_label_scores(picked, head.weight, head.bias, targets)]  # an all-masked batch still needs a graph
        log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1 = (torch.cat(parts) for parts in zip(*chunks))

        def spread(values: torch.Tensor) -> torch.Tensor:
            return values.new_zeros(mask.shape).masked_scatter(mask, values)

        per_token = spread(log_probs)
        loss = -per_token.sum() / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
        return FusedCausalLMOutput(
            loss=loss,
            log_probs=per_token,
            entropy=spread(entropy),
            log_sum_sq_probs=spread(log_sum_sq_probs),
            mean_logits=spread(mean_logits),
            is_top1=spread(is_top1),
            label_mask=mask,
        )

    model.forward = forward
    return True


class CompletionDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer, projecting to the vocabulary only at completion positions on every device.

    TRL scores the labelled positions only on CUDA/XPU; elsewhere every position, which on CPU is the
    vocabulary projection over whole prompts for chosen, rejected and the reference pass. With
    `completion_lm_head` the loss is the same (tested field by field against TRL's head) and a demo DPO step
    took 4.3 s instead of 11.5 s at 2.3 GB peak instead of 3.4 GB (64 creditmix pairs, 6 steps) (SmolLM2-135M, 2-core CPU, TRL 1.16).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for model in (self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model, self.ref_model):
            if model is not None:
                completion_lm_head(model)


def load_pairs(path: str | Path, labels: list[str] | None = None) -> list[Pair]:
    """Read user pairs; refuse empty or identical sides (and, for classification, sides outside the labels)."""
    path = Path(path)
    pairs = []
    for number, record in read_records(path):
        sides = {}
        for field in ("prompt", "chosen", "rejected"):
            value = record.get(field)
            if not isinstance(value, str) or not value.strip():
                raise DataError(path, number, field, "missing or empty")
            if labels is not None and field != "prompt" and value not in labels:
                raise DataError(path, number, field, f"{value!r} is not one of the labels {labels}")
            sides[field] = value
        if sides["chosen"].strip() == sides["rejected"].strip():
            raise DataError(path, number, "rejected", "identical to chosen: the pair prefers nothing")
        pairs.append(Pair(sides["prompt"], sides["chosen"], sides["rejected"], "user", number))
    return pairs


def check_pairs(pairs: list[Pair], cfg: TaskConfig, tokenizer: PreTrainedTokenizerBase, source: str) -> int:
    """Refuse pairs whose prompt + longer side is over `training.max_length`, and too few pairs; return the tokens."""
    if len(pairs) < cfg.dpo.min_pairs:
        raise DataError(source, None, None, f"{len(pairs)} usable preference pairs, fewer than dpo.min_pairs={cfg.dpo.min_pairs}")
    total = 0
    for number, pair in enumerate(pairs, start=1):
        prompt = render_prompt(tokenizer, cfg.instruction, pair.prompt)
        n_prompt = len(tokenizer(prompt, add_special_tokens=False).input_ids)
        n_side = max(len(tokenizer(side, add_special_tokens=False).input_ids) for side in (pair.chosen, pair.rejected)) + 2
        if n_prompt + n_side > cfg.training.max_length:
            raise DataError(
                source, pair.line or number, "prompt", f"{n_prompt + n_side} tokens, over training.max_length={cfg.training.max_length}"
            )
        total += 2 * (n_prompt + n_side)
    return total


def dpo_dataset(pairs: list[Pair], instruction: str) -> Dataset:
    rows = []
    for p in pairs:
        chat = completion_chat(instruction, p.prompt, p.chosen)
        rows.append({"prompt": chat["prompt"], "chosen": chat["completion"], "rejected": [{"role": "assistant", "content": p.rejected}]})
    return Dataset.from_list(rows)


def dpo_config(cfg: TaskConfig, checkpoint_dir: str | Path, n_pairs: int, progress: bool = True) -> DPOConfig:
    d = cfg.dpo
    shared = trainer_args(cfg, checkpoint_dir, n_pairs, progress, epochs=d.epochs) | {"learning_rate": d.learning_rate}
    # A pair is two sequences. Half as many pairs per forward and twice the accumulation keep an optimizer step at
    # `batch_size` pairs (the loss is a mean over pairs, so the gradient is the same) and a forward at `batch_size`
    # sequences, as an SFT step: the demo's peak went from 1.40x to 1.04x an SFT run's (`distill-slm bench dpo`).
    if cfg.training.batch_size % 2 == 0:
        shared |= {"per_device_train_batch_size": cfg.training.batch_size // 2, "gradient_accumulation_steps": cfg.training.grad_accum * 2}
    # The reference's log-probs are computed once, in a pass before training, instead of a no-grad forward inside
    # every step: a DPO step on the demo 6.2 s -> 3.7 s (the peak barely moved: `distill-slm bench dpo`).
    return DPOConfig(**shared, beta=d.beta, loss_type=[d.loss_type], precompute_ref_log_probs=True)


def shared_by_ranks(dataset: Dataset, folder: str | Path, key: str, wait_s: float = 600) -> Dataset:
    """`dataset` as files every rank of a data-parallel run opens (alone: as it is). TRL's DPO computes the reference
    log-probabilities on rank 0 into a cache file beside the dataset's own files, and the other ranks read it there; an
    in-memory dataset's cache is a temporary folder of each process's own, so rank 1 looked for rank 0's file in vain.
    Rank 0 writes `folder/pairs-<key>` (renamed into place whole); the others wait for it."""
    if data_parallel()[1] == 1:
        return dataset
    path = Path(folder) / f"pairs-{key}"
    if main_process() and not path.exists():
        incoming = path.with_name(path.name + ".incoming")
        shutil.rmtree(incoming, ignore_errors=True)
        dataset.save_to_disk(str(incoming))
        os.rename(incoming, path)
    deadline = time.monotonic() + wait_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 did not write {path} in {wait_s:.0f} s")
        time.sleep(0.2)
    return load_from_disk(str(path))


def train_dpo(
    cfg: TaskConfig,
    settings: ModelSettings,
    pairs: list[Pair],
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    start_adapter: str | Path | None = None,
    progress: bool = True,
    source: str = "<pairs>",
) -> tuple[Path, TrainStats]:
    """Train (or resume) a DPO adapter, from `start_adapter` (SFT -> DPO) or a fresh LoRA; save it to `out_dir`."""
    return run_training(
        cfg,
        settings,
        shared_by_ranks(dpo_dataset(pairs, cfg.instruction), checkpoint_dir, json_sha256([asdict(p) for p in pairs], 16)),
        checkpoint_dir,
        out_dir,
        progress,
        check=lambda tokenizer: check_pairs(pairs, cfg, tokenizer, source),
        make_trainer=CompletionDPOTrainer,
        args=dpo_config(cfg, checkpoint_dir, len(pairs), progress),
        start_adapter=start_adapter,
    )
