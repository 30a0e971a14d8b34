"""Calibrated decoder vs generate-and-parse on the embedded model and the creditmix eval rows.

Figures: latency per request of each, macro-F1 of each, single-request vs batch-16 throughput,
and the base model's predicted-label distribution with and without calibration. How close the
decoder runs to the machine: its floating-point operations (counted by torch's FlopCounterMode on
the same calls) per second of the timed calls, as a share of this machine's dense matrix-multiply
rate measured in the same run, with the same threads and dtype.
With `--adapter DIR` the same figures are taken again on a trained adapter.
Targets: latency ratio (calibrated / generate) <= 0.6 at equal or better macro-F1;
batch-16 throughput >= 2x single-request throughput; achieved FLOP rate at batch 16 >= 0.5 of the
matrix-multiply rate.

    distill-slm bench calibrated [--quick] [--json]
"""

from __future__ import annotations

import time
from collections import Counter

import torch
from torch.utils.flop_counter import FlopCounterMode

from core.common.config import TaskConfig
from core.common.rows import Example
from core.common.splits import balanced_split
from core.evaluation.metrics import classification_metrics
from core.model.calibrated import generate_and_parse
from core.model.decoders import classification_decoder
from core.model.loading import load_adapter, load_model
from core.settings import ModelSettings
from demos import creditmix


def eval_rows(per_class: int) -> list[Example]:
    cfg = TaskConfig()
    rows = [Example(**r) for r in creditmix.generate(cfg.data.demo.n_rows, seed=cfg.data.demo.seed)]
    return balanced_split(rows, cfg.labels, 1, per_class, seed=0)[1]


def matmul_rate(dtype: torch.dtype = torch.float32, size: int = 1024, seconds: float = 2.0) -> float:
    """This machine's dense matrix-multiply rate (FLOP/s): the best of repeated `size`-cubed products."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    best, deadline = 0.0, time.perf_counter() + seconds
    a @ b  # warm-up
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start))
    return best


def counted_flops(decoder, texts: list[str]) -> int:
    """Floating-point operations of `decoder.predict(texts)` as torch dispatches them (padding included)."""
    with FlopCounterMode(display=False) as counter:
        decoder.predict(texts)
    return counter.get_total_flops()


def compare(cfg: TaskConfig, model, tokenizer, rows: list[Example], adapter: str | None = None) -> dict:
    """Generate-and-parse vs the calibrated decoder (single and batch-16) on one model."""
    texts, gold = [r.text for r in rows], [r.label for r in rows]
    torch.manual_seed(0)

    generate_and_parse(model, tokenizer, cfg.labels, cfg.instruction, texts[0])  # warm-up
    start = time.perf_counter()
    generated = [generate_and_parse(model, tokenizer, cfg.labels, cfg.instruction, t, max_new_tokens=8) for t in texts]
    generate_s = time.perf_counter() - start

    single = classification_decoder(cfg, model, tokenizer, adapter)
    single.batch_size = 1
    single.prior()  # computed once per decoder, not per request: keep it out of the timing
    start = time.perf_counter()
    calibrated = single.predict(texts)
    single_s = time.perf_counter() - start

    batched = classification_decoder(cfg, model, tokenizer, adapter)
    batched.batch_size = 16
    batched.prior()
    start = time.perf_counter()
    batched.predict(texts)
    batch_s = time.perf_counter() - start

    n = len(texts)
    peak = matmul_rate(next(model.parameters()).dtype)
    flop_share = {
        name: round(counted_flops(decoder, texts) / seconds / peak, 3)
        for name, decoder, seconds in (("batch1", single, single_s), ("batch16", batched, batch_s))
    }
    gen_f1 = classification_metrics(gold, generated, cfg.labels)["macro_f1"]
    cal_f1 = classification_metrics(gold, [p.label for p in calibrated], cfg.labels)["macro_f1"]
    uncal = [max(p.raw_probs, key=p.raw_probs.get) for p in calibrated]
    uncal_f1 = classification_metrics(gold, uncal, cfg.labels)["macro_f1"]
    figures = {
        "n_requests": n,
        "generate_parse_ms_per_request": round(1000 * generate_s / n, 1),
        "calibrated_ms_per_request": round(1000 * single_s / n, 1),
        "latency_ratio_calibrated_over_generate": round(single_s / generate_s, 3),
        "generate_parse_macro_f1": round(gen_f1, 4),
        "likelihood_calibrated": single.calibrate,
        "calibrated_macro_f1": round(cal_f1, 4),
        "uncalibrated_likelihood_macro_f1": round(uncal_f1, 4),
        "single_requests_per_s": round(n / single_s, 2),
        "batch16_requests_per_s": round(n / batch_s, 2),
        "throughput_ratio_batch16_over_single": round(single_s / batch_s, 2),
        "matmul_gflop_per_s": round(peak / 1e9, 1),
        "torch_threads": torch.get_num_threads(),
        "flop_rate_share_of_matmul": flop_share,
        "predicted_labels_generate": dict(Counter(g or "<none>" for g in generated)),
        "predicted_labels_uncalibrated": dict(Counter(uncal)),
        "predicted_labels_calibrated": dict(Counter(p.label for p in calibrated)),
        "calibration_prior": {k: round(float(v), 4) for k, v in zip(cfg.labels, single.prior())},
    }
    return figures


def run(quick: bool = False, adapter: str | None = None) -> dict:
    cfg = TaskConfig()
    rows = eval_rows(6 if quick else 20)
    model, tokenizer = load_model(cfg.model, ModelSettings())
    figures = compare(cfg, model, tokenizer, rows)
    if adapter:
        # The same comparison on a trained adapter, where both decoders have something to get right.
        figures = {
            "base": figures,
            "adapter": compare(cfg, load_adapter(model, adapter), tokenizer, rows, adapter=adapter) | {"path": adapter},
        }
    for side in [figures] if not adapter else figures.values():
        side["target_latency_ratio_le_0.6"] = side["latency_ratio_calibrated_over_generate"] <= 0.6
        side["target_f1_not_worse"] = side["calibrated_macro_f1"] >= side["generate_parse_macro_f1"]
        side["target_batch_throughput_ge_2x"] = side["throughput_ratio_batch16_over_single"] >= 2.0
        side["target_batch16_flop_share_ge_0.5"] = side["flop_rate_share_of_matmul"]["batch16"] >= 0.5
    return figures
