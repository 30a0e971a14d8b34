"""Constrained generation speed on a CPU: today's `generate`, the shared loop, and the loop's fast path.

On the embedded model and the invoices demo documents, one document at a time (batch 1, as a
service request), schema-constrained with XGrammar, `max_new_tokens` 320 (the idp default):
  * `generate`: transformers' `generate` with the grammar's logits processor (the path before);
  * `loop`: `core.model.fast_decode.greedy_decode`, fp32 (the same answers, tested);
  * `fast`: the loop with `enable_fast_decode` (fp16 decode copies of the linear weights).
Figures: decoded tokens per second of each, the fast path's ratio to `generate`, field F1 and the
schema-valid rate of each against the gold answers, and how many answers the fast path changed.
Batched: 8 documents per decode, fp32 vs the fast path's bf16 copies (tokens/s, field F1).
Tight budget: `max_new_tokens` at 1.2x the longest gold answer, the grammar alone (today's decode,
cut where the budget ends) vs budget-aware closing (`core.model.closing`): schema-valid rate, F1.
Over HTTP: the real service (uvicorn) answering extractions of at most 150 tokens with an adapter
of the embedded model: one client, p50/p95 latency with `fast_decode` off (before) and on (after);
then 8 concurrent clients on the fast service (requests/s against one client, p50/p95).
Targets: fast >= 50 tokens/s and >= 3.5x `generate`; field F1 within 0.005 of fp32; 8 clients
>= 3x one client's throughput; 100% schema-valid under the tight budget.

    distill-slm bench generate [--quick] [--json]
"""

from __future__ import annotations

import copy
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
import yaml

from core.common.config import LoraSettings, ModelConfig, TaskConfig
from core.evaluation.metrics import extraction_metrics
from core.model.fast_decode import enable_fast_decode, greedy_decode
from core.model.loading import attach_lora, load_model
from core.model.schema import GrammarMask, SchemaDecoder, TaskSchema
from core.registry import Registry
from core.settings import ModelSettings, ServiceSettings
from demos import invoices
from service.main import serve_in_thread


def _with_generate(decoder: SchemaDecoder, document: str) -> tuple[str, int]:
    enc = decoder.tokenizer([decoder.prompt(document)], return_tensors="pt", add_special_tokens=False)
    out = decoder.model.generate(
        **enc,
        max_new_tokens=decoder.max_new_tokens,
        do_sample=False,
        logits_processor=[GrammarMask(decoder.grammar, 1)],
        pad_token_id=decoder.tokenizer.pad_token_id,
        eos_token_id=decoder.tokenizer.eos_token_id,
    )
    ids = out[0, enc["input_ids"].shape[1] :].tolist()
    n = next((i for i, t in enumerate(ids) if t == decoder.tokenizer.eos_token_id), len(ids))
    return decoder.tokenizer.decode(ids[:n], skip_special_tokens=True), n


def _side(decoder: SchemaDecoder, documents: list[str], gold: list[dict], answer=None) -> dict:
    answer = answer or (lambda d: (lambda r: (r.text, r.completion_tokens))(decoder.extract([d])[0]))
    answer(documents[0])  # warm-up
    start = time.perf_counter()
    answers = [answer(d) for d in documents]
    seconds = time.perf_counter() - start
    parsed = [decoder.schema.parse(text) for text, _ in answers]
    metrics = extraction_metrics(gold, [output for output, _ in parsed], [output is not None and not errors for output, errors in parsed])
    tokens = sum(n for _, n in answers)
    return {
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
        "field_f1": round(metrics["field_f1"], 4),
        "schema_valid_rate": round(metrics["schema_valid_rate"], 4),
        "texts": [text for text, _ in answers],
    }


def _clients(client: httpx.Client, documents: list[str], tokenizer, clients: int) -> dict:
    """`clients` closed-loop clients, each sending every document in turn: requests/s and per-request latency."""
    latencies, tokens = [], []

    def one_client(offset: int) -> None:
        for i in range(len(documents)):
            document = documents[(i + offset) % len(documents)]
            start = time.perf_counter()
            answer = client.post("/infer/sft", json={"task": "invoices", "input": document}).raise_for_status().json()
            latencies.append((time.perf_counter() - start) * 1000)
            tokens.append(len(tokenizer(answer["output"], add_special_tokens=False).input_ids))

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one_client, range(clients)))
    seconds = time.perf_counter() - start
    return {
        "clients": clients,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / seconds, 3),
        "completion_tokens_per_s": round(sum(tokens) / seconds, 1),
        "completion_tokens_mean": round(float(np.mean(tokens)), 1),
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1),
        "latency_ms_p95": round(float(np.percentile(latencies, 95)), 1),
    }


def _without_closer(decoder: SchemaDecoder, document: str) -> tuple[str, int]:
    """Today's constrained decode before budget-aware closing: the grammar alone, cut where the budget ends."""
    enc = decoder.tokenizer([decoder.prompt(document)], return_tensors="pt", add_special_tokens=False)
    new, _ = greedy_decode(
        decoder.model,
        enc,
        decoder.max_new_tokens,
        decoder.tokenizer.eos_token_id,
        decoder.tokenizer.pad_token_id,
        [GrammarMask(decoder.grammar, 1)],
    )
    ids = new[0].tolist()
    n = next((i for i, t in enumerate(ids) if t == decoder.tokenizer.eos_token_id), len(ids))
    return decoder.tokenizer.decode(ids[:n], skip_special_tokens=True), n


def tight_budget(model, tokenizer, schema: TaskSchema, documents: list[str], gold: list[dict]) -> dict:
    """The demo schema with `max_new_tokens` at 1.2x the longest gold answer: the grammar alone vs budget-aware closing."""
    longest = max(len(tokenizer(schema.dumps(g), add_special_tokens=False).input_ids) for g in gold)
    decoder = SchemaDecoder(model, tokenizer, schema, invoices.INSTRUCTION, max_new_tokens=int(1.2 * longest), batch_size=1)
    closed = [decoder.extract([d])[0] for d in documents]
    figures = {
        "longest_gold_tokens": longest,
        "max_new_tokens": decoder.max_new_tokens,
        "grammar_only": _side(decoder, documents, gold, answer=lambda d: _without_closer(decoder, d)),
        "budget_aware": _side(decoder, documents, gold),
        "closed_early": sum(r.closed_early for r in closed),
    }
    for side in ("grammar_only", "budget_aware"):
        figures[side].pop("texts")
    return figures


def batched(model, fast_model, tokenizer, schema: TaskSchema, documents: list[str], gold: list[dict], rows: int = 8) -> dict:
    """Decoding `rows` documents at once: fp32 weights vs the fast path's bf16 copies (what the service's batches use)."""
    figures = {}
    for name, m in (("fp32", model), ("fast", fast_model)):
        decoder = SchemaDecoder(m, tokenizer, schema, invoices.INSTRUCTION, max_new_tokens=320, batch_size=rows)
        decoder.extract(documents[:rows])  # warm-up
        start = time.perf_counter()
        results = decoder.extract(documents)
        seconds = time.perf_counter() - start
        metrics = extraction_metrics(gold, [r.output for r in results], [r.valid for r in results])
        tokens = sum(r.completion_tokens for r in results)
        figures[name] = {
            "rows": rows,
            "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1),
            "field_f1": round(metrics["field_f1"], 4),
            "schema_valid_rate": round(metrics["schema_valid_rate"], 4),
        }
    figures["field_f1_fast_minus_fp32"] = round(figures["fast"]["field_f1"] - figures["fp32"]["field_f1"], 4)
    return figures


def over_http(documents: list[str], max_new_tokens: int = 150) -> dict:
    """p50/p95 of one client's extraction requests to the real service, fast decode off, then on."""
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TaskConfig(type="idp", max_new_tokens=max_new_tokens)
        model, tokenizer = load_model(cfg.model, ModelSettings())
        adapter = Path(tmp) / "adapter"
        attach_lora(model, LoraSettings(r=8)).save_pretrained(str(adapter))  # LoRA B starts at zero: the base's answers
        tokenizer.save_pretrained(str(adapter))
        registry = Registry(Path(tmp) / "runs")
        ref = registry.register("invoices", "sft", adapter, {"field_f1": 0.0}, yaml.safe_dump(cfg.model_dump(mode="json")), {})
        registry.promote("invoices", ref, force=True)
        for name, fast in (("before_fast_decode_off", False), ("after_fast_decode_on", True)):
            settings = ServiceSettings(
                runs_dir=registry.root, audit_log=Path(tmp) / f"audit-{name}.jsonl", fast_decode="auto" if fast else "off"
            )
            server, url = serve_in_thread(settings)
            try:
                with httpx.Client(base_url=url, timeout=600) as client:
                    client.post("/infer/sft", json={"task": "invoices", "input": documents[0]}).raise_for_status()  # warm-up
                    figures[name] = _clients(client, documents, tokenizer, 1)
                    model = server.config.app.state.runtime.engine.model  # what the service set up on this CPU
                    figures[name]["decode_dtypes"] = sorted(str(d).removeprefix("torch.") for d in getattr(model, "decode_dtypes", ()))
                    if fast:  # concurrent clients: their requests share decode steps (the service's extraction batcher)
                        figures["clients_8"] = _clients(client, documents, tokenizer, 8)
            finally:
                server.should_exit = True
                time.sleep(1.0)
    figures["throughput_8_clients_over_1"] = round(
        figures["clients_8"]["requests_per_s"] / figures["after_fast_decode_on"]["requests_per_s"], 2
    )
    figures["p50_ratio_before_over_after"] = round(
        figures["before_fast_decode_off"]["latency_ms_p50"] / figures["after_fast_decode_on"]["latency_ms_p50"], 2
    )
    return figures


def run(quick: bool = False) -> dict:
    torch.manual_seed(0)
    rows = invoices.generate(8 if quick else 30, seed=9)
    documents, gold = [r["document"] for r in rows], [r["target"] for r in rows]
    # Over HTTP first: the servers' model threads must not share the cores with OpenMP teams this thread starts below.
    http = over_http(documents[: 4 if quick else 10])
    model, tokenizer = load_model(ModelConfig(), ModelSettings())
    schema = TaskSchema.from_dict(invoices.SCHEMA)
    fast_model = copy.deepcopy(model)
    fast_on = enable_fast_decode(fast_model)
    sides = {
        "generate": _side(
            generating := SchemaDecoder(model, tokenizer, schema, invoices.INSTRUCTION, max_new_tokens=320, batch_size=1),
            documents,
            gold,
            answer=lambda d: _with_generate(generating, d),
        ),
        "loop": _side(SchemaDecoder(model, tokenizer, schema, invoices.INSTRUCTION, max_new_tokens=320, batch_size=1), documents, gold),
        "fast": _side(
            SchemaDecoder(fast_model, tokenizer, schema, invoices.INSTRUCTION, max_new_tokens=320, batch_size=1), documents, gold
        ),
    }
    texts = {name: side.pop("texts") for name, side in sides.items()}
    figures = {
        "documents": len(documents),
        "torch_threads": torch.get_num_threads(),
        "fast_path_enabled": fast_on,
        **sides,
        "loop_answers_as_generate": sum(a == b for a, b in zip(texts["loop"], texts["generate"])),
        "fast_answers_changed": sum(a != b for a, b in zip(texts["fast"], texts["loop"])),
        "ratio_fast_over_generate": round(sides["fast"]["tokens_per_s"] / sides["generate"]["tokens_per_s"], 2),
        "ratio_loop_over_generate": round(sides["loop"]["tokens_per_s"] / sides["generate"]["tokens_per_s"], 2),
        "field_f1_fast_minus_fp32": round(sides["fast"]["field_f1"] - sides["loop"]["field_f1"], 4),
    }
    figures["batched"] = batched(model, fast_model, tokenizer, schema, documents, gold)
    figures["tight_budget"] = tight_budget(fast_model, tokenizer, schema, documents, gold)
    figures["http"] = http
    figures["target_50_tokens_per_s"] = sides["fast"]["tokens_per_s"] >= 50
    figures["target_3.5x_generate"] = figures["ratio_fast_over_generate"] >= 3.5
    figures["target_f1_within_0.005"] = abs(figures["field_f1_fast_minus_fp32"]) <= 0.005
    figures["target_service_8_clients_3x"] = http["throughput_8_clients_over_1"] >= 3
    figures["target_tight_budget_all_valid"] = figures["tight_budget"]["budget_aware"]["schema_valid_rate"] == 1.0
    return figures
