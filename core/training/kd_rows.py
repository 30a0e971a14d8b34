"""KD rows for generation tasks (extraction, code): the teacher's answer as the target, its top-k token
log-probabilities where its tokens are provably the student's. Apart from `core.training.kd_trainer` so that the task
kinds, which build these rows, do not import the trainer (TRL) into every process that only serves.

    rows, counts = generation_kd_rows(traces, cfg, tokenizer)
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from core.common.config import TaskConfig
from core.common.prompts import completion_chat


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
