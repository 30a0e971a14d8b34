"""The embedded base model against another (default: Gemma 3 270M, `distill-slm models fetch gemma3-270m`), measured
the same way in one run: memory, classification latency, generation speed and a training step.

Each side runs in its own process (a clean resident-memory figure) on the development task `loans` (4 labels that
share prefixes, long-ish inputs): load time and the resident memory the weights add; the calibrated decoder's p50
latency for one input and its rows/s for a batch of 16; greedy decode tokens/s (64 new tokens, one row); and the
seconds per SFT optimizer step (batch 8, the default recipe, bf16 autocast where this CPU is fast at it). Quality
per task is `bench generalize` with `model={"base_model": ...}` (classification, extraction) and `bench.codegen.sft_only`
(code generation): docs/results/base-models-quality.json.

    distill-slm bench base-models [--quick] [--json]
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import tempfile
import time
from pathlib import Path

from core.settings import ModelSettings

RSS_FIELD = "VmRSS:"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(RSS_FIELD):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(base_model: str, quick: bool = False) -> dict:
    """One side, in the calling process: what loading, scoring, decoding and a training step of `base_model` cost."""
    import torch

    from bench.generators import DEVELOPMENT
    from core.common.config import TaskConfig
    from core.common.rows import Example
    from core.methods import sft
    from core.model.calibrated import CalibratedDecoder
    from core.model.fast_decode import greedy_decode
    from core.model.loading import load_model

    demo = DEVELOPMENT["loans"]
    cfg = TaskConfig(labels=demo.labels, instruction=demo.instruction, model={"base_model": base_model})
    rows = [Example(r.get("id", f"r{i}"), r["text"], r["label"]) for i, r in enumerate(demo.generate(40, seed=11))]
    before = _rss_mb()
    start = time.perf_counter()
    model, tokenizer = load_model(cfg.model, ModelSettings())
    load_s = time.perf_counter() - start
    decoder = CalibratedDecoder(model, tokenizer, cfg.labels, cfg.instruction, batch_size=16)
    decoder.predict([rows[0].text])  # warm-up (and the content-free calibration): every weight has been read
    weights_mb = _rss_mb() - before
    one = []
    for row in rows[: 3 if quick else 12]:
        start = time.perf_counter()
        decoder.predict([row.text])
        one.append((time.perf_counter() - start) * 1000)
    batch = [r.text for r in rows[:16]]
    start = time.perf_counter()
    decoder.predict(batch)
    rows_per_s = len(batch) / (time.perf_counter() - start)
    new_tokens = 8 if quick else 64
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write a short note about loans."}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    start = time.perf_counter()
    with torch.no_grad():
        tokens, _ = greedy_decode(model, dict(enc), new_tokens, eos_token_id=-1, pad_token_id=tokenizer.pad_token_id)
    decode_tokens_per_s = tokens.shape[1] / (time.perf_counter() - start)
    del model, decoder
    steps = 2 if quick else 6
    cfg.training.max_steps, cfg.training.save_steps, cfg.training.validation_per_class = steps, 10_000, 0
    with tempfile.TemporaryDirectory() as tmp:
        _, stats = sft.train(cfg, ModelSettings(), rows[: 8 * steps], [], Path(tmp) / "ck", Path(tmp) / "adapter", progress=False)
    return {
        "load_s": round(load_s, 2),
        "weights_rss_mb": round(weights_mb),
        "classify_one_p50_ms": round(statistics.median(one), 1),
        "classify_batch_rows_per_s": round(rows_per_s, 1),
        "decode_tokens_per_s": round(decode_tokens_per_s, 1),
        "sft_s_per_step": round(stats.train_runtime_s / max(stats.steps, 1), 2),  # the trainer's own clock: no loading
        "sft_steps": stats.steps,
    }


def _side(base_model: str, quick: bool, out) -> None:
    out.put(measure(base_model, quick))


def run(quick: bool = False, base: str = "embedded", other: str = "gemma3-270m") -> dict:
    sides = {}
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per side: its memory is its own
    for name in (base, other):
        queue = context.Queue()
        process = context.Process(target=_side, args=(name, quick, queue))
        process.start()
        sides[name] = queue.get(timeout=3600)
        process.join()
    ratio = lambda key: round(sides[other][key] / sides[base][key], 2)  # noqa: E731
    return {
        "base": base,
        "other": other,
        base: sides[base],
        other: sides[other],
        "other_over_base": {
            key: ratio(key)
            for key in ("weights_rss_mb", "classify_one_p50_ms", "classify_batch_rows_per_s", "decode_tokens_per_s", "sft_s_per_step")
        },
    }
