"""Knowledge distillation from teacher traces (offline: the teacher is never in memory while training).

`KDTrainer` is `CompletionSFTTrainer` (TRL's SFTTrainer) with two changes to the loss:

* Every row carries a weight. Classification with soft targets turns one input into one row per
  label the teacher gives real probability to, weighted by that probability, so the summed loss is
  the cross-entropy against the teacher's calibrated label distribution, not only its argmax.
* Rows of generation tasks may carry the teacher's top-k log-probabilities for every completion
  token. Where they do, a KL term pulls the student's distribution over those k tokens toward the
  teacher's; `token_kl_weight` mixes it with the sequence-level cross-entropy. It is used only when
  the teacher's tokens are the student's (checked by `shared_tokenizer`, never assumed).

    adapter_dir, stats = train_kd(cfg, traces, checkpoint_dir, out_dir)
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from core.calibrated import task_messages
from core.config import TaskConfig
from core.data import Example, balance
from core.sft import CompletionSFTTrainer, TrainStats, check_lengths, run_training


class KDCollator:
    """TRL's collator plus the per-row weight and the padded teacher top-k per completion token."""

    def __init__(self, pad_token_id: int) -> None:
        self.base = DataCollatorForLanguageModeling(pad_token_id=pad_token_id)

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.base([{k: e[k] for k in ("input_ids", "labels") if k in e} for e in examples])
        batch["kd_weight"] = torch.tensor([float(e.get("kd_weight", 1.0)) for e in examples])
        topk = [e.get("teacher_topk_ids") or [] for e in examples]
        if any(topk):
            steps = max(len(t) for t in topk)
            k = max(len(step) for t in topk for step in t)
            ids = torch.zeros((len(examples), steps, k), dtype=torch.long)
            logprobs = torch.full((len(examples), steps, k), float("-inf"))
            for row, example in enumerate(examples):
                for step, (step_ids, step_lps) in enumerate(zip(example.get("teacher_topk_ids") or [], example.get("teacher_topk_logprobs") or [])):
                    ids[row, step, : len(step_ids)] = torch.tensor(step_ids)
                    logprobs[row, step, : len(step_lps)] = torch.tensor(step_lps)
            batch["teacher_topk_ids"], batch["teacher_topk_logprobs"] = ids, logprobs
        return batch


class KDTrainer(CompletionSFTTrainer):
    """Weighted completion-only cross-entropy, plus a top-k KL term where teacher log-probs exist."""

    def __init__(self, *args, token_kl_weight: float = 0.5, temperature: float = 1.0, **kwargs) -> None:
        self.token_kl_weight, self.temperature = token_kl_weight, temperature
        super().__init__(*args, **kwargs)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(self._signature_columns) + ["kd_weight", "teacher_topk_ids", "teacher_topk_logprobs"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop("kd_weight")
        topk_ids, topk_lps = inputs.pop("teacher_topk_ids", None), inputs.pop("teacher_topk_logprobs", None)
        targets = inputs["labels"][:, 1:]
        keep = (targets != -100).any(dim=0).nonzero().squeeze(-1)
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**model_inputs, use_cache=False, logits_to_keep=keep)
        logits = outputs.logits.float()  # [B, len(keep), V]
        picked = targets[:, keep]
        scored = picked != -100
        nll = F.cross_entropy(logits.transpose(1, 2), picked.clamp(min=0), reduction="none")  # [B, K]
        token_w = weights.to(logits.device)[:, None] * scored
        loss = (nll * token_w).sum() / token_w.sum().clamp(min=1e-9)
        if topk_ids is not None and self.token_kl_weight > 0:
            loss = (1 - self.token_kl_weight) * loss + self.token_kl_weight * self._topk_kl(logits, scored, topk_ids, topk_lps)
        with torch.no_grad():
            accuracy = ((logits.argmax(-1) == picked) & scored).sum() / scored.sum().clamp(min=1)
        self._metrics["train" if model.training else "eval"]["mean_token_accuracy"].append(accuracy.item())
        return (loss, outputs) if return_outputs else loss

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


def classification_kd_rows(traces: list[dict], cfg: TaskConfig) -> list[dict]:
    """Rows for KDTrainer from classification traces: soft targets (one weighted row per likely label) or argmax.

    Traces are first balanced by the teacher's answer (each label's traces repeated up to the most
    common label's count), as the SFT split is by gold label: an unlabeled pool is rarely balanced,
    and a teacher's soft targets on it carry its prior, which a student learns before anything the
    input says. (Balance alone did not save the creditmix student: see the README's `kd` figures.)
    """
    counts = Counter(trace["output"] for trace in traces)
    by_id = {trace["id"]: trace for trace in traces}
    answers = [Example(trace["id"], trace["prompt"], trace["output"]) for trace in traces]
    rows = []
    for example in balance(answers, list(counts), max(counts.values(), default=0), cfg.training.seed):
        trace = by_id[example.id]
        prompt = task_messages(cfg.instruction, trace["prompt"])
        probs = trace.get("label_probs") or {trace["output"]: 1.0}
        if not cfg.kd.soft_targets:
            probs = {trace["output"]: 1.0}
        kept = {label: p for label, p in probs.items() if p >= cfg.kd.min_target_prob}
        total = sum(kept.values())
        for label, p in kept.items():
            rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": label}], "kd_weight": p / total})
    return rows


def generation_kd_rows(traces: list[dict], cfg: TaskConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[list[dict], dict]:
    """Rows for KDTrainer from generation traces: the teacher's output as the target (sequence-level KD), plus its
    top-k log-probabilities per token where the teacher's tokens are provably the student's; and the counts."""
    rows, counts = [], {"with_token_kl": 0, "sequence_only": 0, "reasons": {}}
    for trace in traces:
        row = {"prompt": task_messages(cfg.instruction, trace["prompt"]), "completion": [{"role": "assistant", "content": trace["output"]}], "kd_weight": 1.0}
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
    traces: list[dict],
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    progress: bool = True,
    source: str = "<traces>",
) -> tuple[Path, TrainStats]:
    """Train (or resume) a KD adapter on usable teacher traces; save it to `out_dir`."""
    if cfg.type == "idp":
        from transformers import AutoTokenizer

        from core.models import resolve_base_model

        path, gguf_file = resolve_base_model(cfg.model.base_model)
        rows, counts = generation_kd_rows(traces, cfg, AutoTokenizer.from_pretrained(path, gguf_file=gguf_file))
        print(f"KD rows: {counts['with_token_kl']} with the token-level KL term, {counts['sequence_only']} sequence-level only "
              f"{counts['reasons'] or ''}", file=sys.stderr)
    else:
        rows = classification_kd_rows(traces, cfg)
    return run_training(
        cfg,
        Dataset.from_list(rows),
        checkpoint_dir,
        out_dir,
        progress=progress,
        check=lambda tokenizer: check_lengths(
            [Example(t["id"], t["prompt"], t["output"]) for t in traces], cfg.instruction, tokenizer, cfg.training.max_length, source
        ),
        make_trainer=lambda **kw: KDTrainer(
            **kw, data_collator=KDCollator(kw["processing_class"].pad_token_id),
            token_kl_weight=cfg.kd.token_kl_weight, temperature=cfg.kd.temperature,
        ),
    )
