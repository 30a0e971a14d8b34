"""Small data: what the recipe makes of 150 labeled rows per class, on two tasks.

* creditmix: the demo's numeric feature strings (label from three numeric facts);
* tickets: free-text support tickets whose priority follows a rule over three facts the text
  states in varied words (scope of impact, workaround, category; `demos/tickets.py`).

Per task: the calibrated zero-shot base and a supervised student (SFT with the adaptive recipe:
passes from the split's size, a validation split of 20 per class held out of the 150, early
stopping on macro-F1 keeping the best step) on 450 fresh balanced rows (150 per class), with the
training time. Targets: supervised macro-F1 >= 0.80 and >= base + 0.40, training <= 15 minutes.

    distill-slm bench small-data [--quick] [--json]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from core.common.config import TaskConfig
from core.common.records import balanced_split
from core.kinds import KINDS
from core.model.loading import load_tokenizer
from core.training.sft import train_sft

KIND = KINDS["classification"]
TASKS = ("creditmix", "tickets")


def _task(name: str, per_class: int, eval_per_class: int, quick: bool) -> dict:
    cfg = TaskConfig(name=name, data={"demo": {"generator": name}})
    cfg.labels = cfg.demo().labels
    cfg.instruction = cfg.demo().instruction
    if quick:
        cfg.training.max_steps, cfg.training.validation_per_class = 4, 2
    demo = cfg.demo()
    labeled = KIND.rows_from_records(cfg, demo.generate(per_class * 8, cfg.data.demo.seed), f"<{name} labeled>")
    _, labeled = balanced_split(labeled, cfg.labels, 0, per_class, cfg.training.seed)  # exactly per_class of each
    fresh = KIND.rows_from_records(cfg, demo.generate(eval_per_class * 8, cfg.data.demo.seed + 100), f"<{name} fresh>")
    _, eval_rows = balanced_split(fresh, cfg.labels, 0, eval_per_class, 0)
    train, validation, _ = KIND.splits(cfg, labeled, eval_rows)
    tokenizer = load_tokenizer(cfg.model)
    work = Path(tempfile.mkdtemp(prefix=f"bench-small-{name}-"))
    start = time.perf_counter()
    adapter, stats = train_sft(
        cfg, train, work / "ck", work / "adapter", validate=lambda model: KIND.validation_score(cfg, model, tokenizer, validation)
    )
    train_s = time.perf_counter() - start
    results = KIND.evaluate(cfg, eval_rows, {"supervised": adapter})
    base, supervised = results["base"]["macro_f1"], results["supervised"]["macro_f1"]
    return {
        "labeled_per_class": per_class,
        "validation_rows": len(validation),
        "training_rows_after_balancing": len(train),
        "eval_rows": len(eval_rows),
        "base_macro_f1": round(base, 4),
        "supervised_macro_f1": round(supervised, 4),
        "supervised_min_class_recall": round(results["supervised"]["min_class_recall"], 4),
        "gain_over_base": round(supervised - base, 4),
        "steps": stats.steps,
        "planned_steps": stats.planned_steps,
        "kept_step": stats.best_step,
        "learning_curve": stats.learning_curve,
        "training_s": round(train_s, 1),
        "self_training": "not run: not built yet (issue 14, item 3)",
        "target_supervised_ge_0.80": supervised >= 0.80,
        "target_gain_ge_0.40": supervised - base >= 0.40,
        "target_training_le_15_min": train_s <= 900,
    }


def run(quick: bool = False, tasks: tuple[str, ...] = TASKS) -> dict:
    per_class, eval_per_class = (8, 4) if quick else (150, 150)
    return {name: _task(name, per_class, eval_per_class, quick) for name in tasks}
