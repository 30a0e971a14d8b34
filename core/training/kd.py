"""Knowledge distillation from teacher traces (offline: the teacher is never in memory while training).

`KDTrainer` is `CompletionSFTTrainer` (TRL's SFTTrainer) whose loss mixes cross-entropy on the
teacher's answer with a term that matches the teacher's *distribution*; `kl_weight` sets the mix.

* Classification: each row carries the teacher's calibrated label distribution. The student's
  distribution is the one the calibrated decoder ranks by — a softmax over the labels' first tokens
  at the answer position, not over the whole vocabulary — and the term is the cross-entropy between
  the two. (The first version spread one input over one weighted row per label, each scored against
  the whole vocabulary: its gradient was mostly "make any label likely", and the creditmix student
  learned the teacher's average answer instead of its answer for the input.)
  Rows and the pool prior stored after training (batch calibration) come from the classification
  task kind (`core.kinds.classification`).
* Generation tasks: rows may carry the teacher's top-k log-probabilities for every completion
  token. Where they do, a KL term pulls the student's distribution over those k tokens toward the
  teacher's. It is used only when the teacher's tokens are the student's (checked by
  `shared_tokenizer`, never assumed).

    rows, counts = generation_kd_rows(traces, cfg, tokenizer)       # or a task kind's `kd_rows`
    adapter_dir, stats = train_kd(cfg, rows, answers, checkpoint_dir, out_dir, labels=None)
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from trl import SFTConfig
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from core.common.config import TaskConfig
from core.common.prompts import completion_chat
from core.common.records import Example
from core.errors import ConfigError
from core.training.completion import completion_forward
from core.training.sft import CompletionSFTTrainer, TrainStats, Validate, check_lengths, run_training, trainer_args


class KDCollator:
    """TRL's collator plus the teacher's label distribution per row, or its padded top-k per completion token."""

    def __init__(self, pad_token_id: int) -> None:
        self.base = DataCollatorForLanguageModeling(pad_token_id=pad_token_id)

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.base([{k: e[k] for k in ("input_ids", "labels") if k in e} for e in examples])
        if any(e.get("label_targets") for e in examples):
            batch["label_targets"] = torch.tensor([e["label_targets"] for e in examples], dtype=torch.float)
        topk = [e.get("teacher_topk_ids") or [] for e in examples]
        if any(topk):
            steps = max(len(t) for t in topk)
            k = max(len(step) for t in topk for step in t)
            ids = torch.zeros((len(examples), steps, k), dtype=torch.long)
            logprobs = torch.full((len(examples), steps, k), float("-inf"))
            for row, example in enumerate(examples):
                for step, (step_ids, step_lps) in enumerate(
                    zip(example.get("teacher_topk_ids") or [], example.get("teacher_topk_logprobs") or [])
                ):
                    ids[row, step, : len(step_ids)] = torch.tensor(step_ids)
                    logprobs[row, step, : len(step_lps)] = torch.tensor(step_lps)
            batch["teacher_topk_ids"], batch["teacher_topk_logprobs"] = ids, logprobs
        return batch


class KDTrainer(CompletionSFTTrainer):
    """(1 - kl_weight) x cross-entropy on the teacher's answer + kl_weight x the distribution term.

    `labels` (classification) are the label strings in the order of each row's `label_targets`. The
    student's distribution over them is read where their tokens part: after the prefix all labels share
    (none for "Good"/"Bad"; "P" for "P1"/"P2"/"P3"), whose probability is the same for every label and
    cancels. So the labels must part at one token position (checked here), and every answer is checked
    to follow that prefix with one of the parting tokens.
    """

    def __init__(self, *args, kl_weight: float = 0.5, temperature: float = 1.0, labels: list[str] | None = None, **kwargs) -> None:
        self.kl_weight, self.temperature = kl_weight, temperature
        super().__init__(*args, **kwargs)
        self.label_token_ids, self.label_depth = None, 0
        if labels and kl_weight > 0:  # with no soft term the labels need not part anywhere
            self.label_depth, self.label_token_ids = parting_tokens(self.processing_class, labels)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(self._signature_columns) + ["label_targets", "teacher_topk_ids", "teacher_topk_logprobs"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        label_targets = inputs.pop("label_targets", None)
        topk_ids, topk_lps = inputs.pop("teacher_topk_ids", None), inputs.pop("teacher_topk_logprobs", None)
        step = completion_forward(model, inputs)
        logits, picked, scored = step.logits, step.targets, step.scored
        loss = F.cross_entropy(logits.transpose(1, 2), picked.masked_fill(~scored, -100), ignore_index=-100)
        if self.label_token_ids is not None and label_targets is not None:
            loss = (1 - self.kl_weight) * loss + self.kl_weight * self._label_ce(logits, picked, scored, label_targets)
        elif self.kl_weight > 0 and topk_ids is not None:
            loss = (1 - self.kl_weight) * loss + self.kl_weight * self._topk_kl(logits, scored, topk_ids, topk_lps)
        self.log_token_accuracy(model, step)
        return (loss, step.outputs) if return_outputs else loss

    def _label_ce(self, logits, picked, scored, label_targets) -> torch.Tensor:
        """Cross-entropy between the teacher's label distribution and the student's, both at temperature T."""
        rows = torch.arange(logits.size(0), device=logits.device)
        # Each row's completion positions are consecutive among the kept ones: the labels part `label_depth` after the first.
        answer = scored.int().argmax(dim=1) + self.label_depth
        label_ids = self.label_token_ids.to(logits.device)
        if not torch.isin(picked[rows, answer], label_ids).all():
            raise ValueError(
                "a KD answer does not part from the labels' shared prefix with a label's token: the rows and `labels` disagree"
            )
        t = self.temperature
        student = torch.log_softmax(logits[rows, answer][:, label_ids] / t, dim=-1)
        teacher = torch.softmax(torch.log(label_targets.to(logits.device).clamp(min=1e-12)) / t, dim=-1)
        return -(teacher * student).sum(-1).mean() * t * t

    def _topk_kl(self, logits, scored, topk_ids, topk_lps) -> torch.Tensor:
        """KL(teacher || student) over the teacher's top-k tokens at each completion position."""
        t = self.temperature
        student = torch.log_softmax(logits / t, dim=-1)
        total, count = logits.new_zeros(()), 0
        for row in range(logits.size(0)):
            positions = scored[row].nonzero().squeeze(-1)  # completion tokens of this row, in order
            steps = min(len(positions), topk_ids.size(1))
            if steps == 0:
                continue
            ids = topk_ids[row, :steps].to(logits.device)
            lps = topk_lps[row, :steps].to(logits.device)
            valid = torch.isfinite(lps)
            if not valid.any():
                continue
            teacher = torch.log_softmax(torch.where(valid, lps / t, torch.full_like(lps, -1e9)), dim=-1)
            student_k = student[row, positions[:steps]].gather(-1, ids)
            student_k = torch.log_softmax(torch.where(valid, student_k, torch.full_like(student_k, -1e9)), dim=-1)
            kl = (teacher.exp() * (teacher - student_k)).masked_fill(~valid, 0.0).sum(-1)
            total, count = total + kl.sum(), count + steps
        return total * t * t / max(count, 1)


def parting_tokens(tokenizer: PreTrainedTokenizerBase, labels: list[str]) -> tuple[int, torch.Tensor]:
    """(how many tokens all labels share before they part, each label's token where they part); ConfigError when
    two labels are still the same at that position or one ends there (the distribution cannot be read at one token)."""
    ids = [tokenizer(label, add_special_tokens=False).input_ids for label in labels]
    depth = 0
    while all(len(x) > depth for x in ids) and len({x[depth] for x in ids}) == 1:
        depth += 1
    parting = [x[depth] if len(x) > depth else None for x in ids]
    if None in parting or len(set(parting)) < len(parting):
        raise ConfigError(
            f"labels {labels} do not part at one token position (tokens {ids}); the soft-target term needs that. "
            "Rename the labels (e.g. distinct first words) or set kd.kl_weight: 0 (the teacher's answer only)"
        )
    return depth, torch.tensor(parting)


def shared_tokenizer(top_logprobs: list, completion: str, tokenizer: PreTrainedTokenizerBase) -> str | None:
    """None if the teacher's tokens are the student's; otherwise the reason they are not.

    Checks that every token the teacher reported is one vocabulary entry of the student and that the
    teacher's sequence of chosen tokens is what the student's tokenizer makes of the completion.
    """
    vocab = tokenizer.get_vocab()
    chosen = []
    for step in top_logprobs:
        for token, _ in step:
            if token not in vocab:
                return f"teacher token {token!r} is not in the student's vocabulary"
        chosen.append(step[0][0] if step else None)
    own = tokenizer.convert_ids_to_tokens(tokenizer(completion, add_special_tokens=False).input_ids)
    if own[: len(chosen)] != chosen:
        return "the student's tokenizer splits the teacher's answer differently"
    return None


def generation_kd_rows(traces: list[dict], cfg: TaskConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[list[dict], dict]:
    """Rows for KDTrainer from generation traces: the teacher's output as the target (sequence-level KD), plus its
    top-k log-probabilities per token where the teacher's tokens are provably the student's; and the counts."""
    rows, counts = [], {"with_token_kl": 0, "sequence_only": 0, "reasons": {}}
    for trace in traces:
        row = completion_chat(cfg.instruction, trace["prompt"], trace["output"])
        top = trace.get("top_logprobs")
        reason = shared_tokenizer(top, trace["output"], tokenizer) if top else "the teacher gave no log-probabilities"
        if reason is None:
            row["teacher_topk_ids"] = [tokenizer.convert_tokens_to_ids([tok for tok, _ in step]) for step in top]
            row["teacher_topk_logprobs"] = [[float(lp) for _, lp in step] for step in top]
            counts["with_token_kl"] += 1
        else:
            counts["sequence_only"] += 1
            counts["reasons"][reason] = counts["reasons"].get(reason, 0) + 1
        rows.append(row)
    if counts["with_token_kl"] and counts["sequence_only"]:
        # One batch must be all-or-nothing for the collator; rows without top-k get an empty list (no KL term).
        for row in rows:
            row.setdefault("teacher_topk_ids", [])
            row.setdefault("teacher_topk_logprobs", [])
    return rows, counts


def train_kd(
    cfg: TaskConfig,
    rows: list[dict],
    answers: list[Example],
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    labels: list[str] | None = None,
    progress: bool = True,
    source: str = "<traces>",
    validate: Validate | None = None,
) -> tuple[Path, TrainStats]:
    """Train (or resume) a KD adapter on `rows` (a task kind's `kd_rows`); save it to `out_dir`.

    `answers` are the teacher's answers as examples (their lengths are checked before training);
    `labels`, for classification, turn on the label-distribution term (else the top-k token term applies).
    """
    return run_training(
        cfg,
        Dataset.from_list(rows),
        checkpoint_dir,
        out_dir,
        progress=progress,
        check=lambda tokenizer: check_lengths(answers, cfg.instruction, tokenizer, cfg.training.max_length, source),
        make_trainer=lambda **kw: KDTrainer(
            **kw,
            data_collator=KDCollator(kw["processing_class"].pad_token_id),
            kl_weight=cfg.kd.kl_weight,
            temperature=cfg.kd.temperature,
            labels=labels,
        ),
        args=SFTConfig(**trainer_args(cfg, checkpoint_dir, len(rows), progress, epochs=cfg.kd.epochs)),
        validate=validate,
    )
