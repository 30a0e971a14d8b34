"""One greedy decode loop for every generating task kind, and its fast path on a CPU.

A CPU decode step of a small model is ~30 layers of small matrix-vector products over fp32 weights,
plus attention and a few hundred small operations; `generate`'s own per-token machinery is not
what costs (the loop below answers as fast, with the same answers). Measured on the embedded
SmolLM2-135M, 2 CPU cores (`distill-slm bench generate`): the linear layers on fp16 weights, with
everything else in fp32 (norms, attention, the KV cache, logits), decode one row 2.7x faster,
while a batch of 16 rows is slower in fp16 (this CPU's fp16 matrix-matrix kernel is). So the fast
path is a decode-time fp16 copy of each linear weight, used only for single-row decode steps;
prefill, batches, training and classification keep the fp32 weights. LoRA layers wrap the copies
and keep their fp32 A and B, so every adapter works on the fast path; the service also merges its
production adapter into a copy of its own (`merge_for_decode`), which removes the LoRA branches'
extra operations from each step.

    enable_fast_decode(model)                                  # False (and a warning) where fp16 is not faster
    ids, scores = greedy_decode(model, enc, max_new_tokens=256, eos_token_id=..., pad_token_id=...,
                                processors=[GrammarMask(...)])
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from peft.tuners.lora import LoraLayer
from transformers import DynamicCache, LogitsProcessor, PretrainedConfig, PreTrainedModel

log = logging.getLogger(__name__)

_fast = contextvars.ContextVar("fast_decode", default=False)
_merged = contextvars.ContextVar("merged_adapter", default=None)  # the active adapter, where it has merged decode copies


class RemoteModel(ABC):
    """A model whose forwards run in a server of their own (`core.serving.vllm.VllmModel`). The decode loop below, and
    what runs on it (grammar masks, the budget closer, streaming), stay here unchanged: the server decodes greedily
    ahead of the loop, under the grammar of the loop's `GrammarMask` if it has one, and each step's logits name the
    token it chose. A row whose token the loop overrides (the budget closer forcing a closing) leaves the server; its
    logits then offer end-of-sequence only, which the closer's forced tokens override."""

    config: PretrainedConfig  # the base model's own: context length, vocabulary size
    device = torch.device("cpu")

    @abstractmethod
    def decode(self, max_new_tokens: int, processors: list[LogitsProcessor]) -> contextlib.AbstractContextManager[Callable[..., object]]:
        """One batch's decode: a context whose value is called as the model is in `greedy_decode` (prefill, then one
        token per row per step) and answers an object with `logits`; leaving it ends the rows still running."""


def output_vocab_size(model: PreTrainedModel | RemoteModel) -> int:
    """The width of the model's logits (a loaded model's output embedding may be wider than its tokenizer)."""
    if isinstance(model, RemoteModel):
        return model.config.vocab_size
    return model.get_output_embeddings().weight.shape[0]


def step_dtype(rows: int) -> torch.dtype:
    """The decode copy a step of `rows` rows runs on: fp16 for one row (matrix-vector), bf16 for a batch (matrix-matrix)."""
    return torch.float16 if rows == 1 else torch.bfloat16


class DecodeLinear(torch.nn.Linear):
    """`nn.Linear` with decode-time copies of its weight, keyed by (merged adapter or None, dtype), used inside
    `fast_steps()`: fp16 for one-row steps, bf16 for batched steps (`step_dtype`)."""

    copies: dict[tuple[str | None, torch.dtype], torch.Tensor]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fast.get():
            dtype = step_dtype(x.shape[:-1].numel())
            # a layer the merged adapter does not touch has no copy of its own: the base copy is its weight
            weight = self.copies.get((_merged.get(), dtype)) if _merged.get() else None
            weight = self.copies.get((None, dtype)) if weight is None else weight
            if weight is not None:
                bias = None if self.bias is None else self.bias.to(dtype)
                return torch.nn.functional.linear(x.to(dtype), weight, bias).to(x.dtype)
        return super().forward(x)


@contextlib.contextmanager
def fast_steps(model: PreTrainedModel, rows: int = 1):
    """Decode steps of `rows` rows on the decode copies, where `enable_fast_decode` made that dtype (else as before);
    with a merged adapter active, its LoRA branches are off (merged in)."""
    if step_dtype(rows) not in getattr(model, "decode_dtypes", ()):
        yield
        return
    token = _fast.set(True)
    # The merged adapter's layers decode on their merged copies: their LoRA branches are switched off for the steps.
    # Only those layers (a branch the merge did not cover keeps adding its delta), and by the layers' own flag: PEFT's
    # `disable_adapter()` walks every module and reports the model's status each time, ~50 ms, which a continuous
    # batch (`core.model.continuous`), entering this once per step, paid on every token.
    layers = model.decode_merged.get(_merged.get(), ()) if _merged.get() else ()
    was = [layer._disable_adapters for layer in layers]
    try:
        for layer in layers:
            layer._disable_adapters = True
        yield
    finally:
        for layer, disabled in zip(layers, was):
            layer._disable_adapters = disabled
        _fast.reset(token)


@contextlib.contextmanager
def merged_adapter(model: PreTrainedModel, adapter: str):
    """While active, fast decode steps use `adapter`'s merged copies (if `merge_for_decode` made them)."""
    token = _merged.set(adapter if adapter in getattr(model, "decode_merged", ()) else None)
    try:
        yield
    finally:
        _merged.reset(token)


def merge_for_decode(model: PreTrainedModel, adapter: str) -> bool:
    """Copies of weight + LoRA delta for `adapter` beside the base copies (each decode dtype): its fast steps cost what
    the base's do.

    A LoRA adapter on every linear layer doubles the small operations of a decode step (measured over HTTP: fast decode
    1.4x with the adapter's branches, vs 2.7x for the base); merged, it costs the model's 16-bit size again per decode
    dtype (270 MB for SmolLM2-135M), so the service merges the production adapter of generating tasks only.
    """
    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and isinstance(m.base_layer, DecodeLinear) and adapter in m.lora_A]
    for layer in layers:
        with torch.no_grad():
            merged = layer.base_layer.weight + layer.get_delta_weight(adapter)
            for dtype in model.decode_dtypes:
                layer.base_layer.copies[(adapter, dtype)] = merged.to(dtype)
    if layers:
        model.decode_merged = {**getattr(model, "decode_merged", {}), adapter: layers}
    return bool(layers)


def drop_merged(model: PreTrainedModel, adapter: str) -> None:
    for module in model.modules():
        if isinstance(module, DecodeLinear):
            for dtype in getattr(model, "decode_dtypes", ()):
                module.copies.pop((adapter, dtype), None)
    if hasattr(model, "decode_merged"):
        model.decode_merged.pop(adapter, None)


def matmul_speedup(dtype: torch.dtype, rows: int, out_features: int = 8192, in_features: int = 576, repeats: int = 20) -> float:
    """How much faster this CPU multiplies `rows` activations by a `dtype` weight than by an fp32 one (a decode step's
    linear layer; 8192 rows, like an MLP or LM-head block, so the timing is not all call overhead). Each side's best of
    five trials: a single timing on a busy 2-core machine varied from 1.4x to 3.0x."""
    weight, x = torch.randn(out_features, in_features), torch.randn(rows, in_features)
    low, x_low = weight.to(dtype), x.to(dtype)
    best = []
    for run in (lambda: torch.nn.functional.linear(x, weight), lambda: torch.nn.functional.linear(x_low, low).float()):
        run()
        trials = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            trials.append(time.perf_counter() - start)
        best.append(min(trials))
    return best[0] / best[1]


def enable_fast_decode(model: PreTrainedModel, path: str = "auto") -> bool:
    """Give every linear layer of `model` (LoRA's A and B excepted) 16-bit decode copies: `path` names them ('fp16' for
    one-row steps, 'bf16' for batched steps, 'fp16+bf16', 'off'), or 'auto' takes the advice of a speed check on this
    CPU (a copy where it multiplies >= 1.3x faster than fp32). False where no copy is made. The path is then fixed
    for the life of the model (`model.decode_dtypes`): pin it where answers must not depend on the machine.

    Measured here (576x1536, 2 threads): one row fp16 0.039 ms vs fp32 0.05; 8 rows bf16 0.049 ms vs fp32 0.156 and
    fp16 0.294 (this CPU has AVX512-BF16; its fp16 matrix-matrix kernel is slow). Each copy costs half the linear
    weights' fp32 size (270 MB for SmolLM2-135M), once for all adapters.
    """
    if next(model.parameters()).device.type != "cpu" or next(model.parameters()).dtype != torch.float32:
        return False  # on a GPU, or already in half precision, the model's own weights are the fast path
    named = {"fp16": torch.float16, "bf16": torch.bfloat16}
    if path == "auto":
        speedups = {dtype: matmul_speedup(dtype, rows) for dtype, rows in ((torch.float16, 1), (torch.bfloat16, 8))}
        log.info("fast decode: fp16 one-row %.2fx, bf16 eight-row %.2fx fp32 on this CPU", *speedups.values())
        dtypes = [dtype for dtype, speedup in speedups.items() if speedup >= 1.3]
    else:
        dtypes = [named[part] for part in path.split("+") if part in named]
    if not dtypes:
        if path == "auto":
            log.warning("fast decode off: 16-bit matrix products are not faster than fp32 on this CPU; decoding in fp32")
        return False
    for path, child in model.named_modules():
        if type(child) is torch.nn.Linear and ".lora_" not in f".{path}":
            child.__class__ = DecodeLinear  # same module, same fp32 parameters: PEFT and training see an nn.Linear
            child.copies = {(None, dtype): child.weight.detach().to(dtype) for dtype in dtypes}
    model.decode_dtypes = set(dtypes)
    return True


@torch.inference_mode()
def greedy_decode(
    model: PreTrainedModel | RemoteModel,
    enc: dict[str, torch.Tensor],
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    processors: list[LogitsProcessor] = (),
    keep_scores: bool = False,
    on_token: Callable[[int, int], bool] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Greedy decoding of a left-padded batch: the new tokens [rows, steps] (pad after a row's EOS), and per-step scores.

    The same answers as `generate(do_sample=False)` with the same processors (tested), without its per-token
    machinery; single-row steps run on the fp16 decode weights where `enable_fast_decode` set them up. `on_token(row,
    token)` sees each row's tokens as they are decoded (end-of-sequence excluded; a streamed answer,
    `core.serving.streaming`); when it answers False the row ends there, as if it had decoded end-of-sequence, and a
    batch whose rows have all ended stops.
    """
    # a remote model's decode is opened per batch and ends (its rows still running in the server stop) with the loop
    remote = model.decode(max_new_tokens, list(processors)) if isinstance(model, RemoteModel) else contextlib.nullcontext(model)
    with remote as forward:
        ids, mask = enc["input_ids"], enc["attention_mask"]
        rows = ids.shape[0]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = forward(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1)
        sequences = ids
        new, scores = [], []
        done = torch.zeros(rows, dtype=torch.bool, device=ids.device)
        with fast_steps(model, rows):
            for _ in range(max_new_tokens):
                logits = out.logits[:, -1].float()
                for processor in processors:
                    logits = processor(sequences, logits)
                if keep_scores:
                    scores.append(logits)
                token = torch.where(done, pad_token_id, logits.argmax(-1))
                new.append(token)
                sequences = torch.cat([sequences, token[:, None]], dim=-1)
                ended = token == eos_token_id
                if on_token is not None:
                    for row, (t, was_done) in enumerate(zip(token.tolist(), done.tolist())):
                        if not was_done and t != eos_token_id and not on_token(row, t):
                            ended[row] = True
                done |= ended
                if bool(done.all()):
                    break
                mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype, device=mask.device)], dim=-1)
                positions = positions[:, -1:] + 1
                out = forward(input_ids=token[:, None], attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
        return torch.stack(new, dim=1) if new else ids[:, :0], scores
