"""Knowledge distillation on the creditmix demo, with no gold labels on the student's training data.

The `deliberate` teacher (base model + retrieved k-shot examples + voting) labels an unlabeled
pool; a KD student learns its calibrated label distributions; all three are scored on the same
balanced eval split. Targets: the teacher beats the calibrated zero-shot base by >= 0.15 macro-F1;
the student reaches >= 0.95x the teacher's macro-F1 at <= 0.2x its latency per request (both one
request at a time, same machine).

    distill-slm bench kd [--quick] [--json]

Traces are cached under runs/.bench/kd/: a second run reuses the teacher's answers and only trains.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.timing import p50_ms
from core.common.config import TaskConfig
from core.common.rows import Example, text_sha256
from core.common.splits import balanced_split
from core.kinds import for_config, make_teacher
from core.methods import kd as kd_method
from core.model.calibrated import CalibratedDecoder
from core.model.decoders import classification_decoder
from core.model.loading import activate_adapter, load_model
from core.settings import ModelSettings
from core.teachers.traces import TraceStore, generate_traces
from demos import creditmix


def run(quick: bool = False) -> dict:
    cfg = TaskConfig()
    work = Path("runs/.bench") / ("kd-quick" if quick else "kd")
    demo = cfg.data.demo
    rows = [Example(**r) for r in creditmix.generate(demo.n_rows, seed=demo.seed)]
    per_class_eval = 6 if quick else cfg.data.eval_per_class
    labeled, eval_rows = balanced_split(rows, cfg.labels, cfg.data.train_per_class, per_class_eval, cfg.training.seed)
    pool_size = 24 if quick else 600  # the recorded figures' pool (the deliberate teacher: ~2.7 s an answer)
    pool = [Example(r["id"], r["text"]) for r in creditmix.generate(pool_size, seed=demo.seed + 1)]
    if quick:
        cfg.training.max_steps = 3

    teacher_cache: list = []

    def teacher():
        if not teacher_cache:
            teacher_cache.append(make_teacher(cfg, ModelSettings(), labeled))
        return teacher_cache[0]

    figures: dict = {
        "pool": len(pool),
        "eval_rows": len(eval_rows),
        "teacher": cfg.teacher.model_dump(include={"backend", "k_shot", "votes", "retrieval_weight"}),
    }
    eval_store = TraceStore(work / "traces-eval.jsonl")
    eval_summary = generate_traces(eval_rows, eval_store, teacher, cfg.teacher.prices)
    kind = for_config(cfg, ModelSettings())
    t_metrics = kind.teacher_metrics(eval_rows, eval_store.traces)
    figures["teacher_macro_f1"] = round(t_metrics["macro_f1"], 4)
    print(f"teacher on eval: macro-F1 {t_metrics['macro_f1']:.3f}, {t_metrics['latency_ms_p50']:.0f} ms/request", file=sys.stderr)

    pool_store = TraceStore(work / "traces-pool.jsonl")
    pool_summary = generate_traces(pool, pool_store, teacher, cfg.teacher.prices)
    figures["pool_traces"] = {k: pool_summary[k] for k in ("traces", "asked", "cached", "failed", "elapsed_s", "traces_per_s")}
    figures["teacher_pool_accuracy_vs_hidden_gold"] = round(
        float(np.mean([pool_store.traces[k]["output"] == g for k, g in _gold(pool_size, demo.seed + 1).items() if k in pool_store.traces])),
        4,
    )
    teacher_cache.clear()  # release the teacher's model before training

    # The student is trained afresh each run (minutes): a cached one would hide changes to KD itself.
    fresh = Path(tempfile.mkdtemp(prefix="bench-kd-"))
    adapter, kd_stats, _ = kd_method.train(cfg, ModelSettings(), pool_store.usable(), fresh / "checkpoints", fresh / "adapter")
    figures["kd_training"] = {"steps": kd_stats.steps, "train_s": round(kd_stats.train_runtime_s, 1), "final_loss": kd_stats.final_loss}
    model, tokenizer = load_model(cfg.model, ModelSettings())
    base = kind.score(classification_decoder(cfg, model, tokenizer, adapter=None), eval_rows)
    base_ms = p50_ms(classification_decoder(cfg, model, tokenizer, adapter=None).predict, [r.text for r in eval_rows[:30]])
    model = activate_adapter(model, adapter, name="kd")
    student_decoder = classification_decoder(cfg, model, tokenizer, adapter=adapter)
    student = kind.score(student_decoder, eval_rows)
    # The same student without its in-domain prior divided out, for contrast.
    uncalibrated = kind.score(CalibratedDecoder(model, tokenizer, cfg.labels, cfg.instruction, calibrate=False), eval_rows)
    student_ms = p50_ms(student_decoder.predict, [r.text for r in eval_rows[:30]])
    # Teacher latency again, one request at a time right beside the student's, so that both see
    # the same machine load (the traces' latencies may have been taken on a busier machine).
    teacher_ms = p50_ms(teacher().answer, [r.text for r in eval_rows[:12]])
    teacher_cache.clear()
    figures["teacher_ms_per_request_p50"] = round(teacher_ms, 1)
    figures |= {
        "base_calibrated_macro_f1": round(base["macro_f1"], 4),
        "base_ms_per_request_p50": round(base_ms, 1),
        "kd_macro_f1": round(student["macro_f1"], 4),
        "kd_min_class_recall": round(student["min_class_recall"], 4),
        "kd_recall": {label: round(m["recall"], 3) for label, m in student["per_class"].items()},
        "kd_pool_prior": [round(p, 3) for p in student_decoder.prior()],
        "kd_macro_f1_without_pool_prior": round(uncalibrated["macro_f1"], 4),
        "kd_ms_per_request_p50": round(student_ms, 1),
        "teacher_gain_over_base": round(t_metrics["macro_f1"] - base["macro_f1"], 4),
        "kd_over_teacher_f1_ratio": round(student["macro_f1"] / max(t_metrics["macro_f1"], 1e-9), 4),
        "kd_over_teacher_latency_ratio": round(student_ms / max(teacher_ms, 1e-9), 4),
        "eval_traces_cached": eval_summary["cached"],
    }
    figures["target_teacher_gain_ge_0.15"] = figures["teacher_gain_over_base"] >= 0.15
    figures["target_kd_f1_ge_0.95x_teacher"] = figures["kd_over_teacher_f1_ratio"] >= 0.95
    figures["target_kd_latency_le_0.2x_teacher"] = figures["kd_over_teacher_latency_ratio"] <= 0.2
    return figures


def _gold(n: int, seed: int) -> dict[str, str]:
    """The pool's hidden labels (the generator knows them; the student never sees them)."""
    return {text_sha256(r["text"]): r["label"] for r in creditmix.generate(n, seed=seed)}
