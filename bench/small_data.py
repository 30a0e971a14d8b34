"""Small data: what the recipe makes of 150 labeled rows per class, on two tasks.

* creditmix: the demo's numeric feature strings (label from three numeric facts);
* tickets: free-text support tickets whose priority follows a rule over three facts the text
  states in varied words (scope of impact, workaround, category; `demos/tickets.py`).

Per task, on 450 fresh balanced rows (150 per class), each with its training time:

* base: the calibrated zero-shot base model;
* supervised: SFT with the adaptive recipe (passes from the split's size, a validation split of 20
  per class held out of the 150, early stopping on macro-F1 keeping the best step);
* labeler: that adapter run the deliberate way (retrieved k-shot demonstrations from the labeled
  rows + votes) or zero-shot as it is served, whichever scores better on the validation rows (as
  the flow's self-training chooses; both validation figures are printed);
* self-trained: SFT again on the labeled rows plus the labeler's answers on a 1,500-row unlabeled
  pool at or above the confidence threshold chosen on the validation split (`self_training`);
* KD: a student distilled from the labeler's answers (and label distributions) on the same pool.

Targets: supervised macro-F1 >= 0.80 and >= base + 0.40, training <= 15 minutes; self-training
adds >= 0.03 (or the figures say why not).

    distill-slm bench small-data [--tasks creditmix,tickets] [--quick] [--json]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.timing import timed
from core.common.config import TaskConfig
from core.common.splits import balanced_split, distinct_inputs
from core.evaluation.evaluate import evaluate_variants, validation_score
from core.kinds import for_config, make_teacher
from core.kinds.data import rows_from_records, splits, train_rows
from core.methods import kd as kd_method
from core.methods.selftrain import LABELER_MODES, labeler_config
from core.model.loading import load_tokenizer
from core.settings import ModelSettings
from core.teachers.traces import TraceStore, generate_traces
from core.training.sft_trainer import train_sft

TASKS = ("creditmix", "tickets")


def _task(name: str, per_class: int, eval_per_class: int, pool_size: int, quick: bool) -> dict:
    cfg = TaskConfig(name=name, data={"demo": {"generator": name}})
    cfg.labels = cfg.demo().labels
    cfg.instruction = cfg.demo().instruction
    cfg.methods = ["sft", "selftrain"]  # as a task file with a pool: self-training's threshold needs the validation rows
    if quick:
        cfg.training.max_steps, cfg.training.validation_per_class = 4, 2
    demo = cfg.demo()
    kind = for_config(cfg, ModelSettings())
    labeled = rows_from_records(kind, demo.generate(per_class * 8, cfg.data.demo.seed), f"<{name} labeled>")
    _, labeled = balanced_split(labeled, cfg.labels, 0, per_class, cfg.training.seed)  # exactly per_class of each
    fresh = rows_from_records(kind, demo.generate(eval_per_class * 8, cfg.data.demo.seed + 100), f"<{name} fresh>")
    _, eval_rows = balanced_split(fresh, cfg.labels, 0, eval_per_class, 0)
    train, validation, _ = splits(kind, labeled, eval_rows)
    gold = list({r.id: r for r in train}.values())
    raw_pool = rows_from_records(kind, demo.pool(pool_size, cfg.data.demo.seed + 200), f"<{name} pool>", require_answers=False)
    pool, pool_counts = distinct_inputs(raw_pool, labeled + eval_rows)
    tokenizer = load_tokenizer(cfg.model, ModelSettings())
    work = Path(tempfile.mkdtemp(prefix=f"bench-small-{name}-"))

    def validate(model):
        return validation_score(kind, model, tokenizer, validation)

    (supervised, stats), supervised_s = timed(
        lambda: train_sft(cfg, ModelSettings(), train, work / "sft-ck", work / "sft", validate=validate)
    )

    # As the flow does: the supervised adapter labels the validation rows the deliberate way and zero-shot; the better
    # one answers the pool, the validation rows (its threshold) and the eval rows (the labeler's own figure).
    labeling_s, checked = {}, {}
    for mode in LABELER_MODES:
        mode_cfg = labeler_config(cfg, mode == "zero-shot")
        store = TraceStore(work / "traces" / mode / "validation.jsonl")
        teacher = []
        _, labeling_s[f"validation_{mode}"] = timed(
            lambda store=store, teacher=teacher, mode_cfg=mode_cfg: generate_traces(
                validation, store, lambda: teacher.append(make_teacher(mode_cfg, ModelSettings(), gold, adapter=supervised)) or teacher[0]
            )
        )
        store.close()
        checked[mode] = (store, teacher[0] if teacher else None)
    scores = {mode: kind.teacher_metrics(validation, store.traces)["macro_f1"] for mode, (store, _) in checked.items()}
    mode = max(scores, key=scores.get)
    labeler = [checked[mode][1] or make_teacher(labeler_config(cfg, mode == "zero-shot"), ModelSettings(), gold, adapter=supervised)]
    del checked
    stores = {"validation": TraceStore.read(work / "traces" / mode / "validation.jsonl")}
    for split, rows in (("pool", pool), ("eval", eval_rows)):
        stores[split] = TraceStore(work / "traces" / mode / f"{split}.jsonl")
        _, labeling_s[split] = timed(lambda rows=rows, split=split: generate_traces(rows, stores[split], lambda: labeler[0]))
        stores[split].close()
    labeler.clear()  # its model goes before training starts
    pool_traces = list(stores["pool"].traces.values())
    added, choice = kind.confident_rows(validation, stores["validation"].traces, pool_traces)
    self_rows = train_rows(kind, gold + added)
    (self_trained, self_stats), self_s = timed(
        lambda: train_sft(cfg, ModelSettings(), self_rows, work / "self-ck", work / "self", validate=validate)
    )
    usable = [t for t in pool_traces if not t.get("error")]
    (kd, kd_stats, kd_counts), kd_s = timed(
        lambda: kd_method.train(cfg, ModelSettings(), usable, work / "kd-ck", work / "kd", progress=True)
    )

    results = evaluate_variants(kind, eval_rows, {"supervised": supervised, "self_trained": self_trained, "kd": kd})
    teacher = kind.teacher_metrics(eval_rows, stores["eval"].traces)
    f1 = {name: round(m["macro_f1"], 4) for name, m in results.items()} | {"labeler": round(teacher["macro_f1"], 4)}
    base, sup = f1["base"], f1["supervised"]
    return {
        "labeled_per_class": per_class,
        "validation_rows": len(validation),
        "training_rows_after_balancing": len(train),
        "eval_rows": len(eval_rows),
        "pool": pool_counts,
        "macro_f1": f1,
        "min_class_recall": {name: round(m["min_class_recall"], 4) for name, m in results.items()},
        "gain_over_base": round(sup - base, 4),
        "self_training_gain": round(f1["self_trained"] - sup, 4),
        "kd_vs_labeler": round(f1["kd"] / max(f1["labeler"], 1e-9), 3),
        "training_s": {"supervised": supervised_s, "self_trained": self_s, "kd": kd_s},
        "labeling_s": labeling_s,
        "self_training": choice | {"training_rows_after_balancing": len(self_rows)},
        "labeler_mode": {"chosen": mode, "validation_macro_f1": {m: round(v, 4) for m, v in scores.items()}},
        "kd_rows": kd_counts,
        "steps": {
            "supervised": [stats.steps, stats.planned_steps, stats.best_step],
            "self_trained": [self_stats.steps, self_stats.planned_steps, self_stats.best_step],
            "kd": [kd_stats.steps, kd_stats.planned_steps, kd_stats.best_step],
        },
        "learning_curve": {"supervised": stats.learning_curve, "self_trained": self_stats.learning_curve},
        "target_supervised_ge_0.80": sup >= 0.80,
        "target_gain_ge_0.40": sup - base >= 0.40,
        "target_training_le_15_min": supervised_s <= 900,
        "target_self_training_gain_ge_0.03": f1["self_trained"] - sup >= 0.03,
    }


def run(quick: bool = False, tasks: str | tuple[str, ...] = TASKS) -> dict:
    per_class, eval_per_class, pool_size = (8, 4, 24) if quick else (150, 150, 1500)
    names = tasks.split(",") if isinstance(tasks, str) else tasks
    return {name: _task(name, per_class, eval_per_class, pool_size, quick) for name in names}
