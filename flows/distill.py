"""The `distill` flow: prepare_data -> train_sft -> train_selftrain | (teacher_traces -> train_kd) -> train_dpo -> evaluate
-> register -> promote -> reload_service.

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

from prefect import flow, get_run_logger

from core.common.config import TaskConfig
from core.common.locks import run_lock
from core.errors import MethodsFailed
from core.kinds import kind_of
from tasks.evaluate import evaluate_task
from tasks.prepare import prepare_data
from tasks.registry import promote_task, register_task, reload_service
from tasks.teacher import LABELER_MODES, choose_labeler, teacher_traces
from tasks.train import train_dpo_task, train_kd_task, train_selftrain_task, train_sft_task


# log_prints stays off: it patches print(), which breaks dill's stdout capture inside datasets.
@flow(name="distill")
def distill(cfg: TaskConfig = TaskConfig(), extra_pool: str | None = None) -> dict:  # noqa: B008 (the default fills the Prefect UI's form)
    """Distill one task into adapters, evaluate them against the base model, register, promote, and (with `service.url`)
    reload the service so it serves the new production version.

    `extra_pool`: a JSONL of inputs the teacher answers first (a drift window's traffic: the retrain's reason).

    A method that fails does not take the others with it: they are still evaluated, registered and
    gated, and then the run fails naming the methods that did not finish (a rerun resumes them).
    """
    with run_lock(cfg.work_dir, cfg.name):  # one run of a task at a time: a second fails naming this one
        return _distill(cfg, extra_pool)


def _distill(cfg: TaskConfig, extra_pool: str | None) -> dict:
    prepared = prepare_data(cfg, extra_pool)
    adapters: dict[str, str] = {}
    failed: dict[str, str] = {}
    summary: dict = {"task": cfg.name, "variants": {}, "pool": prepared["pool"]}
    teacher_on_eval = None

    def attempt(method: str, needs: str | None, train) -> None:
        if needs and needs not in adapters:
            failed[method] = f"needs this run's {needs} adapter, which did not finish"
            return
        try:
            adapters[method] = train()
        except Exception as exc:  # noqa: BLE001 (recorded, named at the end of the run)
            failed[method] = f"{type(exc).__name__}: {exc}"
            get_run_logger().error("%s failed; the other methods go on: %s", method, failed[method])

    if "sft" in cfg.methods:
        attempt("sft", None, lambda: train_sft_task(cfg, prepared["train"], prepared["fingerprint"], prepared["validation"]))

    def self_train() -> str:
        # The SFT adapter labels the validation rows both ways (deliberate: retrieved shots + votes; zero-shot: as served);
        # the better on them labels the pool, and its validation answers choose the confidence threshold.
        ask = lambda split, mode: teacher_traces(cfg, prepared[split], prepared["train"], split, adapters["sft"], mode == "zero-shot")  # noqa: E731
        checked = {mode: ask("validation", mode) for mode in LABELER_MODES}
        choice = choose_labeler(cfg, prepared["validation"], {mode: t["path"] for mode, t in checked.items()})
        summary["self_training_labeler"] = choice
        pool = ask("unlabeled", choice["mode"])
        summary["self_training_traces"] = pool
        return train_selftrain_task(
            cfg, prepared["train"], prepared["validation"], pool["path"], checked[choice["mode"]]["path"], prepared["fingerprint"], choice
        )

    if "selftrain" in cfg.methods:
        attempt("selftrain", "sft", self_train)
    # The embedded teacher runs this run's SFT adapter where labeled data trained one (`teacher.from_sft`).
    teacher_needs = "sft" if cfg.teacher.backend == "deliberate" and cfg.teacher.from_sft and "sft" in cfg.methods else None

    def distil() -> str:
        nonlocal teacher_on_eval
        teacher_adapter = adapters.get(teacher_needs) if teacher_needs else None
        pool = teacher_traces(cfg, prepared["unlabeled"], prepared["train"], "unlabeled", teacher_adapter)
        summary["teacher_traces"] = pool
        adapter = train_kd_task(cfg, pool["path"], prepared["fingerprint"])
        teacher_on_eval = teacher_traces(cfg, prepared["eval"], prepared["train"], "eval", teacher_adapter)["path"]
        return adapter

    if "kd" in cfg.methods:
        attempt("kd", teacher_needs, distil)
    if "dpo" in cfg.methods:
        pool_traces = summary.get("teacher_traces", {}).get("path")
        attempt(
            "dpo",
            "sft" if cfg.dpo.from_sft else None,
            lambda: train_dpo_task(
                cfg, prepared["train"], adapters.get("sft") if cfg.dpo.from_sft else None, prepared["fingerprint"], pool_traces
            ),
        )
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
    promoted = next((ref for ref, d in decisions.items() if d["promoted"]), None)
    if promoted and cfg.service.url:
        summary["service"] = reload_service(cfg, promoted)
    if failed:
        get_run_logger().info("summary of the finished methods: %s", json.dumps(summary, default=str))
        raise MethodsFailed(failed, summary)
    return summary
