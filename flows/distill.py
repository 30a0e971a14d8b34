"""The `distill` flow: prepare_data -> train_sft -> train_selftrain | (teacher_traces -> train_kd) -> train_dpo -> evaluate
-> register -> promote.

Run it through the CLI (`distill-slm run [CONFIG]`) or directly:

    from flows.distill import distill
    summary = distill(TaskConfig.from_yaml("task.yaml"))

With no PREFECT_API_URL set, Prefect starts its embedded SQLite server for the run; nothing has
to be started by hand.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow

from core.common.config import TaskConfig
from core.kinds import kind_of
from tasks.evaluate import evaluate_task
from tasks.prepare import prepare_data
from tasks.registry import promote_task, register_task
from tasks.teacher import teacher_traces
from tasks.train import train_dpo_task, train_kd_task, train_selftrain_task, train_sft_task


# log_prints stays off: it patches print(), which breaks dill's stdout capture inside datasets.
@flow(name="distill")
def distill(cfg: TaskConfig = TaskConfig()) -> dict:  # noqa: B008 (the default fills the Prefect UI's form)
    """Distill one task into adapters, evaluate them against the base model, register, promote."""
    prepared = prepare_data(cfg)
    adapters = {}
    if "sft" in cfg.methods:
        adapters["sft"] = train_sft_task(cfg, prepared["train"], prepared["fingerprint"], prepared["validation"])
    teacher_on_eval = None
    summary: dict = {"task": cfg.name, "variants": {}, "pool": prepared["pool"]}
    if "selftrain" in cfg.methods:  # the SFT adapter, run the deliberate way, labels the pool and the validation rows
        labeled = {
            split: teacher_traces(cfg, prepared[split], prepared["train"], split, adapters["sft"]) for split in ("unlabeled", "validation")
        }
        summary["self_training_traces"] = labeled["unlabeled"]
        adapters["selftrain"] = train_selftrain_task(
            cfg,
            prepared["train"],
            prepared["validation"],
            labeled["unlabeled"]["path"],
            labeled["validation"]["path"],
            prepared["fingerprint"],
        )
    if "kd" in cfg.methods:
        # The embedded teacher runs this run's SFT adapter where labeled data trained one (`teacher.from_sft`).
        teacher_adapter = adapters.get("sft") if cfg.teacher.backend == "deliberate" and cfg.teacher.from_sft else None
        pool = teacher_traces(cfg, prepared["unlabeled"], prepared["train"], "unlabeled", teacher_adapter)
        summary["teacher_traces"] = pool
        adapters["kd"] = train_kd_task(cfg, pool["path"], prepared["fingerprint"])
        teacher_on_eval = teacher_traces(cfg, prepared["eval"], prepared["train"], "eval", teacher_adapter)["path"]
    if "dpo" in cfg.methods:
        start = adapters.get("sft") if cfg.dpo.from_sft else None
        pool_traces = summary.get("teacher_traces", {}).get("path")
        adapters["dpo"] = train_dpo_task(cfg, prepared["train"], start, prepared["fingerprint"], pool_traces)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    eval_dir = evaluate_task(cfg, prepared["eval"], adapters, str(cfg.work_dir / cfg.name / f"eval-{stamp}"), teacher_on_eval)
    summary |= {"eval_dir": eval_dir, "report": str(Path(eval_dir) / "report.md")}
    for name in ["base", *(["teacher"] if teacher_on_eval else []), *adapters]:
        metrics = json.loads((Path(eval_dir) / f"{name}.metrics.json").read_text())
        summary["variants"][name] = {k: metrics[k] for k in kind_of(cfg).summary_keys if k in metrics}
    refs = {method: register_task(cfg, method, adapter_dir, eval_dir, prepared["fingerprint"]) for method, adapter_dir in adapters.items()}
    decisions = promote_task(cfg, list(refs.values()), prepared["eval"]) if refs else {}
    for method, ref in refs.items():
        summary["variants"][method] |= {"registered": ref, "promotion": decisions[ref]}
    return summary
