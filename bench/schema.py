"""Constrained decoding cost: XGrammar (what the schema decoder uses) vs unconstrained vs llguidance.

Same model (the embedded SmolLM2), same invoice prompts, greedy, one document at a time so every
step is one token of one row (no padding in the figure). Reports tokens/s for each, the ratio
constrained / unconstrained (target >= 0.9), schema compile time p50/p95 over 20 distinct schemas
with a cold cache (target p95 <= 1 s), and the cost of compiling a cached schema again.

    distill-slm bench schema [--quick] [--json]
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from transformers import LogitsProcessor

from core.common.config import ModelConfig
from core.model.loading import load_model
from core.model.schema import SEPARATORS, SchemaDecoder, TaskSchema, grammar_compiler
from core.settings import ModelSettings
from demos import invoices


class _LLGuidanceMask(LogitsProcessor):
    """The same job done with llguidance's matcher, for comparison only."""

    def __init__(self, tokenizer, ll_tokenizer, schema_text: str) -> None:
        import llguidance
        import llguidance.torch as llt

        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            schema_text, defaults={"whitespace_flexible": False, "item_separator": SEPARATORS[0], "key_separator": SEPARATORS[1]}
        )
        self.llt, self.matcher = llt, llguidance.LLMatcher(ll_tokenizer, grammar)
        self.vocab = ll_tokenizer.vocab_size
        self.bitmask = llt.allocate_token_bitmask(1, self.vocab)
        self.started = False

    def __call__(self, input_ids, scores):
        if self.started:
            self.matcher.consume_token(int(input_ids[0, -1]))
        self.started = True
        self.llt.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        self.llt.apply_token_bitmask_inplace(scores[:, : self.vocab], self.bitmask)
        return scores


def _tokens_per_s(model, tokenizer, prompts: list[str], max_new_tokens: int, make_processor=None) -> tuple[float, int]:
    tokens, elapsed = 0, 0.0
    for prompt in prompts:
        enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        processors = [make_processor()] if make_processor else []
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                logits_processor=processors,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        elapsed += time.perf_counter() - start
        tokens += out.shape[1] - enc["input_ids"].shape[1]
    return tokens / elapsed, tokens


def _variants(n: int) -> list[dict]:
    """`n` distinct schemas of the demo's size and shape (different string limits), to compile cold."""
    out = []
    for i in range(n):
        schema = copy.deepcopy(invoices.SCHEMA)
        schema["properties"]["number"]["maxLength"] = 16 + i
        out.append(schema)
    return out


def run(quick: bool = False) -> dict:
    model, tokenizer = load_model(ModelConfig(), ModelSettings())
    rows = invoices.generate(3 if quick else 8, seed=21)
    schema = TaskSchema.from_dict(invoices.SCHEMA)
    decoder = SchemaDecoder(model, tokenizer, schema, invoices.INSTRUCTION)
    prompts = [decoder.prompt(r["document"]) for r in rows]
    max_new = 64 if quick else 160
    free_tps, free_n = _tokens_per_s(model, tokenizer, prompts, max_new)
    xgr_tps, xgr_n = _tokens_per_s(model, tokenizer, prompts, max_new, lambda: _mask(decoder))
    figures = {
        "documents": len(rows),
        "max_new_tokens": max_new,
        "unconstrained_tokens_per_s": round(free_tps, 2),
        "unconstrained_tokens": free_n,
        "xgrammar_tokens_per_s": round(xgr_tps, 2),
        "xgrammar_tokens": xgr_n,
        "xgrammar_over_unconstrained": round(xgr_tps / free_tps, 3),
    }
    try:
        import llguidance.hf

        start = time.perf_counter()
        ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=decoder.vocab_size)
        figures["llguidance_tokenizer_setup_s"] = round(time.perf_counter() - start, 3)
        ll_tps, ll_n = _tokens_per_s(model, tokenizer, prompts, max_new, lambda: _LLGuidanceMask(tokenizer, ll_tokenizer, schema.text))
        figures |= {
            "llguidance_tokens_per_s": round(ll_tps, 2),
            "llguidance_tokens": ll_n,
            "llguidance_over_unconstrained": round(ll_tps / free_tps, 3),
        }
    except ImportError:
        figures["llguidance"] = "not installed (pip install '.[bench]')"

    compiler = grammar_compiler(tokenizer, decoder.vocab_size)
    compiler.clear_cache()
    cold = []
    for variant in _variants(5 if quick else 20):
        start = time.perf_counter()
        compiler.compile_json_schema(TaskSchema.from_dict(variant).text, any_whitespace=False, separators=SEPARATORS, strict_mode=True)
        cold.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(20):
        SchemaDecoder(model, tokenizer, TaskSchema.from_dict(invoices.SCHEMA), invoices.INSTRUCTION)
    cached_ms = (time.perf_counter() - start) / 20 * 1000
    figures |= {
        "compile_s_p50": round(float(np.percentile(cold, 50)), 3),
        "compile_s_p95": round(float(np.percentile(cold, 95)), 3),
        "cached_schema_decoder_ms": round(cached_ms, 3),
        "target_throughput_ge_0.9x": figures["xgrammar_over_unconstrained"] >= 0.9,
        "target_compile_p95_le_1s": float(np.percentile(cold, 95)) <= 1.0,
    }
    return figures


def _mask(decoder: SchemaDecoder):
    from core.model.schema import GrammarMask

    return GrammarMask(decoder.grammar, 1)
