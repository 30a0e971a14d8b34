"""Knowledge distillation from teacher traces (offline: the teacher is never in memory while training).

`KDTrainer` is `CompletionSFTTrainer` (TRL's SFTTrainer) whose loss mixes cross-entropy on the
teacher's answer with a term that matches the teacher's *distribution*; `kl_weight` sets the mix.

* Classification: each row carries the teacher's calibrated label distribution. The student's
  distribution is the one the calibrated decoder ranks by: a softmax over the labels of each label's
  whole-sequence log-likelihood after the prompt (`core.model.calibrated.label_sequences`), so labels
  that share prefixes, part at different positions or have many tokens all work; the term is the
  cross-entropy between the two. The label sequences ride in the same forward as the answer: the
  collator appends one block per label after each row, a 4D attention mask lets each block see the
  prompt and itself only, and its positions continue the prompt's, so a step costs one forward of
  the row plus the labels' tokens. (The first version spread one input over one weighted row per
  label, each scored against the whole vocabulary: its gradient was mostly "make any label likely";
  the second read one token where the labels part, and refused label sets that part nowhere.)
  Rows and the pool prior stored after training (batch calibration) come from the classification
  task kind (`core.kinds.classification`).
* Generation tasks: rows may carry the teacher's top-k log-probabilities for every completion
  token. Where they do, a KL term pulls the student's distribution over those k tokens toward the
  teacher's. It is used only when the teacher's tokens are the student's (checked by
  `core.training.kd_rows.shared_tokenizer`, never assumed).

    rows, counts = kind.kd_rows(traces)        # generation: core.training.kd_rows
    adapter_dir, stats = train_kd(cfg, ModelSettings(), rows, answers, checkpoint_dir, out_dir, labels=None)
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import SFTConfig
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from core.common.config import TaskConfig
from core.common.rows import Example
from core.model.calibrated import label_sequences
from core.settings import ModelSettings
from core.training.completion import CompletionStep, completion_forward
from core.training.recipe import plan_steps
from core.training.sft_trainer import CompletionSFTTrainer, TrainStats, Validate, check_lengths, run_training, trainer_args


class KDCollator:
    """TRL's collator plus the teacher's label distribution per row (with the label blocks of `label_blocks`), or its
    padded top-k per completion token."""

    def __init__(self, pad_token_id: int, label_ids: list[list[int]] | None = None) -> None:
        self.base = DataCollatorForLanguageModeling(pad_token_id=pad_token_id)
        self.label_ids = label_ids

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.base([{k: e[k] for k in ("input_ids", "labels") if k in e} for e in examples])
        if self.label_ids and any(e.get("label_targets") for e in examples):
            batch["label_targets"] = torch.tensor([e["label_targets"] for e in examples], dtype=torch.float)
            batch |= label_blocks(batch["input_ids"], batch["labels"], batch["attention_mask"], self.label_ids)
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


def label_blocks(input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor, label_ids: list[list[int]]) -> dict:
    """Append every label's token sequence to each (right-padded) row, so that one forward scores them all.

    Columns `T..` of every row hold the labels' tokens one label after another. A block sees its row's prompt (the tokens
    before the first completion token) and its own earlier tokens, nothing else; its positions continue the prompt's.
    Returns the widened `input_ids` and `labels` (-100 over the blocks), `attention_mask` as a [B, 1, W, W] boolean mask
    (True: may attend), `position_ids`, per label token its `label_token` id, `label_owner` label and, per row,
    `label_from` (the column whose logits predict it), and `real_columns` [B, W] (False on padding).
    """
    rows, width = input_ids.shape
    flat = [(j, token) for j, ids in enumerate(label_ids) for token in ids]
    extra = len(flat)
    total = width + extra
    prompt_len = (labels != -100).int().argmax(dim=1)  # the first completion token's column = the prompt's length
    ids = torch.cat([input_ids, torch.tensor([t for _, t in flat]).expand(rows, -1)], dim=1)
    new_labels = torch.cat([labels, torch.full((rows, extra), -100, dtype=labels.dtype)], dim=1)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    mask = torch.zeros(rows, total, total, dtype=torch.bool)
    mask[:, :width, :width] = causal & attention_mask.bool()[:, None, :]
    mask[:, torch.arange(width), torch.arange(width)] = True  # a padding column sees itself: no query row is empty
    columns = torch.arange(total)
    positions = columns.expand(rows, -1).clone()
    owner = torch.tensor([j for j, _ in flat])
    offset = torch.tensor([sum(1 for jj, _ in flat[:i] if jj == j) for i, (j, _) in enumerate(flat)])  # token's index in its label
    for row in range(rows):
        p = int(prompt_len[row])
        for i in range(extra):
            col = width + i
            mask[row, col, :p] = True
            same = (owner == owner[i]) & (offset <= offset[i])
            mask[row, col, width + same.nonzero().squeeze(-1)] = True
        positions[row, width:] = p + offset
    # Label token i is predicted by the prompt's last column (its label's first token) or its block's previous column.
    previous = torch.where(offset == 0, torch.zeros_like(columns[width:]), columns[width:] - 1)
    label_from = torch.where(offset == 0, (prompt_len - 1)[:, None].expand(-1, extra), previous.expand(rows, -1))
    return {
        "input_ids": ids,
        "labels": new_labels,
        "attention_mask": mask[:, None],
        "position_ids": positions,
        "label_token": torch.tensor([t for _, t in flat]),
        "label_owner": owner,
        "label_from": label_from,
        "real_columns": torch.cat([attention_mask.bool(), torch.ones(rows, extra, dtype=torch.bool)], dim=1),
    }


class KDTrainer(CompletionSFTTrainer):
    """(1 - kl_weight) x cross-entropy on the teacher's answer + kl_weight x the distribution term.

    `labels` (classification) are the label strings in the order of each row's `label_targets`: the student's
    distribution over them is the calibrated decoder's (whole label sequences), read from the collator's label blocks.
    """

    def __init__(self, *args, kl_weight: float = 0.5, temperature: float = 1.0, labels: list[str] | None = None, **kwargs) -> None:
        self.kl_weight, self.temperature = kl_weight, temperature
        super().__init__(*args, **kwargs)
        if labels and kl_weight > 0 and isinstance(self.data_collator, KDCollator):  # with no soft term, no label blocks
            self.data_collator.label_ids = label_sequences(self.processing_class, labels)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(self._signature_columns) + ["label_targets", "teacher_topk_ids", "teacher_topk_logprobs"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        label_targets = inputs.pop("label_targets", None)
        topk_ids, topk_lps = inputs.pop("teacher_topk_ids", None), inputs.pop("teacher_topk_logprobs", None)
        blocks = {key: inputs.pop(key) for key in ("label_token", "label_owner", "label_from", "real_columns") if key in inputs}
        if blocks:
            step, label_logits = self._forward_with_blocks(model, inputs, blocks["label_from"], blocks["real_columns"])
        else:
            step = completion_forward(self._training_forward(model, inputs), inputs)
        logits, picked, scored = step.logits, step.targets, step.scored
        loss = F.cross_entropy(logits.transpose(1, 2), picked.masked_fill(~scored, -100), ignore_index=-100)
        if blocks and label_targets is not None:
            term = self._label_ce(label_logits, blocks["label_token"], blocks["label_owner"], label_targets)
            loss = (1 - self.kl_weight) * loss + self.kl_weight * term
        elif self.kl_weight > 0 and topk_ids is not None:
            loss = (1 - self.kl_weight) * loss + self.kl_weight * self._topk_kl(logits, scored, topk_ids, topk_lps)
        self.log_token_accuracy(model, step)
        return (loss, step.outputs) if return_outputs else loss

    def _forward_with_blocks(
        self, model, inputs: dict, label_from: torch.Tensor, real: torch.Tensor
    ) -> tuple[CompletionStep, torch.Tensor]:
        """One forward over rows and label blocks: the answer's completion step, and the logits predicting each label token.
        In training it runs from the frozen layers' cached output as SFT's does (a row and its blocks are one entry)."""
        targets = inputs["labels"][:, 1:]
        answer_columns = (targets != -100).any(dim=0).nonzero().squeeze(-1)
        keep = torch.unique(torch.cat([answer_columns, label_from.flatten().to(answer_columns.device)]))  # sorted
        dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
        allowed = inputs["attention_mask"]
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
        forward = {k: v for k, v in inputs.items() if k not in ("labels", "attention_mask")} | {"attention_mask": mask}
        runner = self._training_forward(model, forward, real.to(allowed.device))
        outputs = runner(**forward, use_cache=False, logits_to_keep=keep)
        logits = outputs.logits.float()  # [B, len(keep), V]
        where = torch.searchsorted(keep, answer_columns)
        picked = targets[:, answer_columns]
        step = CompletionStep(outputs, logits[:, where], picked, picked != -100)
        rows = torch.arange(logits.size(0), device=logits.device)[:, None]
        return step, logits[rows, torch.searchsorted(keep, label_from.to(keep.device))]  # [B, label tokens, V]

    def _label_ce(self, label_logits, label_token, label_owner, label_targets) -> torch.Tensor:
        """Cross-entropy between the teacher's label distribution and the student's, both at temperature T. The student's
        score of a label is the sum of its tokens' log-probabilities, as the calibrated decoder's."""
        device = label_logits.device
        token_lp = torch.log_softmax(label_logits, dim=-1).gather(
            -1, label_token.to(device)[None, :, None].expand(label_logits.size(0), -1, 1)
        )
        n_labels = label_targets.size(1)
        scores = torch.zeros(label_logits.size(0), n_labels, device=device).index_add(1, label_owner.to(device), token_lp.squeeze(-1))
        t = self.temperature
        student = torch.log_softmax(scores / t, dim=-1)
        teacher = torch.softmax(torch.log(label_targets.to(device).clamp(min=1e-12)) / t, dim=-1)
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


def kd_epochs(cfg: TaskConfig, n_rows: int) -> float:
    """Passes over `n_rows` KD rows: `kd.epochs`, else the training size rule run to `kd.min_steps` steps."""
    return cfg.kd.epochs or plan_steps(cfg.training.model_copy(update={"min_steps": cfg.kd.min_steps}), n_rows).epochs


def train_kd(
    cfg: TaskConfig,
    settings: ModelSettings,
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
        settings,
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
        args=SFTConfig(**trainer_args(cfg, checkpoint_dir, len(rows), progress, epochs=kd_epochs(cfg, len(rows)))),
        validate=validate,
    )
