"""Code generation's decoder: the model answers a spec with a one-line plan, then the code in a ```python block
(`core.common.prompts.format_answer`; `extract_code` takes the block back out). `CodeDecoder` writes a variant's answers, greedy or
sampled. The answers are checked by running the task's tests in the sandbox (`core.evaluation.code_metrics`).

    decoder = CodeDecoder(model, tokenizer, CODEGEN_INSTRUCTION, max_new_tokens=96)
    answers = decoder.answer(prompts)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.common.prompts import CODE_ONLY_INSTRUCTION, CODEGEN_INSTRUCTION, Shots, extract_code, render_prompt  # noqa: F401 (re-exported)
from core.model.fast_decode import greedy_decode


@dataclass
class CodeAnswer:
    """One generated answer (plan and code as written) and what it cost."""

    text: str
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stopped: bool = True  # ended by the model (end of sequence), not by the token budget

    @property
    def code(self) -> str:
        return extract_code(self.text)


class CodeDecoder:
    """A variant's answers to specs under the task's instruction: greedy (pass@1, the service, the teacher's first
    candidate) in left-padded batches on the shared decode loop (`core.model.fast_decode`, fast path included where set up),
    or `n` samples per spec at `temperature` (pass@k, teacher candidates, DPO)."""

    answers = "code"

    def warm_up(self) -> None:
        """Nothing to do before the first request."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        instruction: str,
        max_new_tokens: int = 160,
        batch_size: int = 8,
        temperature: float = 0.8,
    ) -> None:
        self.model, self.tokenizer, self.instruction = model, tokenizer, instruction
        self.max_new_tokens, self.batch_size, self.temperature = max_new_tokens, batch_size, temperature

    def _encode(self, prompts: list[str], shots: list[Shots] | None):
        texts = [render_prompt(self.tokenizer, self.instruction, p, shots[i] if shots else ()) for i, p in enumerate(prompts)]
        return self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False).to(self.model.device)

    @torch.inference_mode()
    def answer(
        self,
        prompts: list[str],
        shots: list[Shots] | None = None,
        max_new_tokens: int | None = None,
        on_token: Callable[[int, int], bool] | None = None,
    ) -> list[CodeAnswer]:
        """Greedy answers, `batch_size` prompts per decode (latency: each batch's time shared by its rows);
        `on_token(prompt index, token)` sees the tokens as they are decoded (`greedy_decode`: streaming)."""
        answers, budget = [], max_new_tokens or self.max_new_tokens  # a served request's comes clamped (`core.serving.answers`)
        for begin in range(0, len(prompts), self.batch_size):
            chunk = prompts[begin : begin + self.batch_size]
            enc = self._encode(chunk, shots[begin : begin + self.batch_size] if shots else None)
            start = time.perf_counter()
            seen = None if on_token is None else (lambda row, token, begin=begin: on_token(begin + row, token))
            new, _ = greedy_decode(self.model, dict(enc), budget, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id, on_token=seen)
            share = (time.perf_counter() - start) * 1000 / len(chunk)
            for row, mask in zip(new, enc.attention_mask):
                answers.append(self._answer(row, share, int(mask.sum())))
        return answers

    def _answer(self, row: torch.Tensor, latency_ms: float, prompt_tokens: int) -> CodeAnswer:
        """A decoded row: its text up to the first end-of-sequence (the padding after it may be the same token)."""
        ended = (row == self.tokenizer.eos_token_id).nonzero()
        length = int(ended[0]) if len(ended) else len(row)
        text = self.tokenizer.decode(row[:length], skip_special_tokens=True)
        return CodeAnswer(text, latency_ms, prompt_tokens, length + bool(len(ended)), bool(len(ended)))

    @torch.inference_mode()
    def sample(self, prompts: list[str], n: int, shots: list[Shots] | None = None) -> list[list[CodeAnswer]]:
        """`n` answers per prompt sampled at `temperature` (top-p 0.95), one generate call per prompt."""
        out = []
        for i, prompt in enumerate(prompts):
            enc = self._encode([prompt], [shots[i]] if shots else None)
            start = time.perf_counter()
            rows = self.model.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                num_return_sequences=n,
                do_sample=True,
                temperature=self.temperature,
                top_p=0.95,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            share = (time.perf_counter() - start) * 1000 / n
            out.append([self._answer(row[enc.input_ids.shape[1] :], share, enc.input_ids.shape[1]) for row in rows])
        return out


def sample_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    instruction: str,
    prompts: list[str],
    n: int = 1,
    temperature: float = 0.8,
    max_new_tokens: int = 160,
) -> list[list[str]]:
    """`n` answers per prompt as text: greedy for n=1 (`CodeDecoder.answer`), else sampled (`CodeDecoder.sample`)."""
    decoder = CodeDecoder(model, tokenizer, instruction, max_new_tokens, batch_size=1, temperature=temperature)
    if n == 1:
        return [[a.text] for a in decoder.answer(prompts)]
    return [[a.text for a in answers] for answers in decoder.sample(prompts, n)]
