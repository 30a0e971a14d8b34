"""Knowledge distillation from a strong teacher over HTTP: the demo's SFT adapter, served by this
project's own service, is an `openai` teacher; a student learns from its answers on 600 unlabeled
pool rows and is scored beside it on 450 fresh balanced rows (150 per class, a seed no split saw).

    distill-slm bench kd-strong [--adapter ADAPTER_DIR] [--quick] [--json]

`--adapter` is the teacher (default: `runs/creditmix`'s production adapter, as `make demo` leaves
it; trained here first when there is none). Beside the KD student it trains an SFT student on the
same 600 inputs with their gold labels: KD from a strong teacher should need no more rows than SFT
on gold. Targets: the KD student >= 0.90x the teacher's macro-F1 at <= 0.2x its latency per request.
Teacher traces are cached under runs/.bench/kd-strong/<adapter hash>/.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from bench.timing import p50_ms
from core.common.config import TaskConfig
from core.common.rows import Example, json_sha256
from core.common.splits import balanced_split
from core.evaluation.evaluate import evaluate_variants
from core.kinds import for_config, make_teacher
from core.kinds.data import labeled_rows, rows_from_records, split, train_rows, unlabeled_pool
from core.methods import kd as kd_method
from core.model.decoders import classification_decoder
from core.model.loading import activate_adapter, load_model
from core.registry import Registry
from core.settings import ModelSettings, ServiceSettings
from core.teachers.traces import TraceStore, generate_traces
from core.training.sft_trainer import train_sft
from service.main import serve_in_thread

TASK = "creditmix"


def _teacher_adapter(adapter: str | None, work: Path) -> Path:
    if adapter:
        return Path(adapter)
    registry = Registry("runs")
    if "production" in registry.aliases(TASK) if TASK in registry.tasks() else False:
        return registry.path(TASK, "production")
    cfg = TaskConfig()
    kind = for_config(cfg, ModelSettings())
    rows, _ = labeled_rows(kind)
    train, _ = split(kind, rows)
    print("no teacher adapter: training the demo's SFT adapter first", file=sys.stderr)
    out, _ = train_sft(cfg, ModelSettings(), train, work / "teacher-checkpoints", work / "teacher-adapter")
    return out


def fresh_eval_rows(cfg: TaskConfig, per_class: int) -> list[Example]:
    """Balanced rows from a seed neither the demo's splits nor its pool use."""
    demo = cfg.demo()
    rows = rows_from_records(for_config(cfg, ModelSettings()), demo.generate(per_class * 8, cfg.data.demo.seed + 100), "<fresh eval rows>")
    return balanced_split(rows, cfg.labels, 1, per_class, seed=0)[1]


def run(quick: bool = False, adapter: str | None = None) -> dict:
    cfg = TaskConfig()
    work_root = Path("runs/.bench") / ("kd-strong-quick" if quick else "kd-strong")
    teacher_dir = _teacher_adapter(adapter, work_root)
    work = work_root / json_sha256(sorted(p.name + str(p.stat().st_size) for p in teacher_dir.iterdir() if p.is_file()), 12)
    pool_size, per_class = (24, 4) if quick else (600, 150)
    if quick:
        cfg.training.max_steps = 3
    cfg.teacher.max_pool = pool_size
    kind = for_config(cfg, ModelSettings())
    pool = unlabeled_pool(kind)
    eval_rows = fresh_eval_rows(cfg, per_class)

    # The teacher: its adapter in a registry of its own, served over loopback HTTP.
    tmp = Path(tempfile.mkdtemp(prefix="bench-kd-strong-"))
    registry = Registry(tmp / "runs")
    registry.register(TASK, "sft", teacher_dir, {"macro_f1": 1.0}, yaml.safe_dump(cfg.model_dump(mode="json")), {})
    registry.promote(TASK, "sft/v0001")
    server, url = serve_in_thread(ServiceSettings(runs_dir=tmp / "runs", audit_log=tmp / "audit.jsonl"))
    figures: dict = {"teacher_adapter": str(teacher_dir), "pool": len(pool), "eval_rows": len(eval_rows)}
    try:
        cfg.teacher = cfg.teacher.model_copy(
            update={"backend": "openai", "base_url": url + "/v1", "model": f"{TASK}:production", "api_key_env": "", "concurrency": 4}
        )
        teacher = make_teacher(cfg, ModelSettings())
        stores = {split: TraceStore(work / f"traces-{split}.jsonl") for split in ("pool", "eval")}
        summary = generate_traces(pool, stores["pool"], lambda: teacher, cfg.teacher.prices)
        figures["pool_traces"] = {k: summary[k] for k in ("traces", "asked", "cached", "failed", "elapsed_s")}
        generate_traces(eval_rows, stores["eval"], lambda: teacher, cfg.teacher.prices)
        t_metrics = kind.teacher_metrics(eval_rows, stores["eval"].traces)
        teacher_ms = p50_ms(teacher.answer, [r.text for r in eval_rows[:30]])
    finally:
        server.should_exit = True
    figures |= {"teacher_macro_f1": round(t_metrics["macro_f1"], 4), "teacher_ms_per_request_p50": round(teacher_ms, 1)}
    traces = stores["pool"].usable()

    # KD student on the teacher's answers; an SFT student on the same inputs with their gold labels.
    kd_dir, kd_stats, kd_counts = kd_method.train(cfg, ModelSettings(), traces, tmp / "kd-checkpoints", tmp / "kd-adapter")
    figures["kd_training"] = {
        "steps": kd_stats.steps,
        "planned_steps": kd_stats.planned_steps,
        "kept_step": kd_stats.best_step,
        "learning_curve": kd_stats.learning_curve,
        "train_s": round(kd_stats.train_runtime_s, 1),
        "rows": kd_counts,
    }
    gold = {r["id"]: r for r in cfg.demo().generate(pool_size, cfg.data.demo.seed + 1)}
    gold_rows = [Example(row.id, row.text, gold["cm-" + row.id.split("-", 1)[1]]["label"]) for row in pool]
    sft_cfg = cfg.model_copy(deep=True)
    sft_train = train_rows(for_config(sft_cfg, ModelSettings()), gold_rows)
    sft_dir, sft_stats = train_sft(sft_cfg, ModelSettings(), sft_train, tmp / "sft-checkpoints", tmp / "sft-adapter")
    figures["sft_on_pool_gold_training"] = {"steps": sft_stats.steps, "train_s": round(sft_stats.train_runtime_s, 1)}

    results = evaluate_variants(kind, eval_rows, {"kd": kd_dir, "sft_on_pool_gold": sft_dir})
    model, tokenizer = load_model(cfg.model, ModelSettings())
    model = activate_adapter(model, kd_dir, name="kd")
    raw = classification_decoder(cfg, model, tokenizer)
    raw.calibrate = False
    without_prior = kind.score(raw, eval_rows)
    student = classification_decoder(cfg, model, tokenizer, adapter=kd_dir)
    student_ms = p50_ms(student.predict, [r.text for r in eval_rows[:30]])
    kd = results["kd"]
    figures |= {
        "base_calibrated_macro_f1": round(results["base"]["macro_f1"], 4),
        "kd_macro_f1": round(kd["macro_f1"], 4),
        "kd_min_class_recall": round(kd["min_class_recall"], 4),
        "kd_recall": {label: round(m["recall"], 3) for label, m in kd["per_class"].items()},
        "kd_macro_f1_without_stored_prior": round(without_prior["macro_f1"], 4),
        "kd_prior": [round(p, 3) for p in student.prior()] if student.calibrate else None,
        "sft_on_pool_gold_macro_f1": round(results["sft_on_pool_gold"]["macro_f1"], 4),
        "kd_ms_per_request_p50": round(student_ms, 1),
        "kd_over_teacher_f1_ratio": round(kd["macro_f1"] / max(t_metrics["macro_f1"], 1e-9), 4),
        "kd_over_teacher_latency_ratio": round(student_ms / max(teacher_ms, 1e-9), 4),
    }
    figures["target_kd_f1_ge_0.90x_teacher"] = figures["kd_over_teacher_f1_ratio"] >= 0.90
    figures["target_kd_latency_le_0.2x_teacher"] = figures["kd_over_teacher_latency_ratio"] <= 0.2
    shutil.rmtree(tmp, ignore_errors=True)
    return figures
