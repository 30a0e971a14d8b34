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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, task

from core.common.config import TaskConfig
from core.common.locks import run_lock
from core.errors import MethodsFailed
from core.kinds import KINDS
from core.methods import waves
from core.methods.selftrain import LABELER_MODES
from flows.runners import cluster_runner, reserving
from tasks.evaluate import evaluate_task
from tasks.prepare import prepare_data
from tasks.registry import promote_task, register_task, reload_service
from tasks.teacher import choose_labeler, teacher_traces
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


@dataclass
class _Run:
    """What the methods of one run share: the prepared data, the adapters trained so far, the summary being built."""

    cfg: TaskConfig
    prepared: dict
    adapters: dict[str, str] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    teacher_on_eval: str | None = None  # the teacher's answers to the eval rows (kd), for the report's teacher row


def _sft(run: _Run) -> str:
    return train_sft_task(run.cfg, run.prepared["train"], run.prepared["fingerprint"], run.prepared["validation"])


def _selftrain(run: _Run) -> str:
    # The SFT adapter labels the validation rows both ways (deliberate: retrieved shots + votes; zero-shot: as served);
    # the better on them labels the pool, and its validation answers choose the confidence threshold.
    cfg, prepared, labeler = run.cfg, run.prepared, run.adapters["sft"]
    checked = {
        mode: teacher_traces(cfg, prepared["validation"], prepared["train"], "validation", labeler, mode == "zero-shot")
        for mode in LABELER_MODES
    }
    choice = choose_labeler(cfg, prepared["validation"], {mode: t["path"] for mode, t in checked.items()})
    run.summary["self_training_labeler"] = choice  # reported even when labeling the pool then fails
    pool = teacher_traces(cfg, prepared["unlabeled"], prepared["train"], "unlabeled", labeler, choice["mode"] == "zero-shot")
    run.summary["self_training_traces"] = pool
    return train_selftrain_task(
        cfg, prepared["train"], prepared["validation"], pool["path"], checked[choice["mode"]]["path"], prepared["fingerprint"], choice
    )


def _kd(run: _Run) -> str:
    cfg, prepared = run.cfg, run.prepared
    teacher_adapter = run.adapters["sft"] if cfg.needs("kd") else None  # the deliberate teacher runs this run's SFT adapter
    pool = teacher_traces(cfg, prepared["unlabeled"], prepared["train"], "unlabeled", teacher_adapter)
    run.summary["teacher_traces"] = pool
    adapter = train_kd_task(cfg, pool["path"], prepared["fingerprint"])
    run.teacher_on_eval = teacher_traces(cfg, prepared["eval"], prepared["train"], "eval", teacher_adapter)["path"]
    return adapter


def _dpo(run: _Run) -> str:
    cfg = run.cfg
    pool_traces = run.summary.get("teacher_traces", {}).get("path")
    start = run.adapters["sft"] if cfg.needs("dpo") else None
    return train_dpo_task(cfg, run.prepared["train"], start, run.prepared["fingerprint"], pool_traces)


STEPS: dict[str, Callable[[_Run], str]] = {"sft": _sft, "selftrain": _selftrain, "kd": _kd, "dpo": _dpo}


@task(name="train_method")
def method_task(method: str, cfg: TaskConfig, prepared: dict, adapters: dict[str, str]) -> tuple[str, dict, str | None]:
    """One method's whole step (its teacher traces included) where the task runner puts it (a cluster's worker); returns its
    adapter and what it adds to the run's summary."""
    run = _Run(cfg, prepared, dict(adapters))
    adapter = STEPS[method](run)
    return adapter, run.summary, run.teacher_on_eval


@flow(name="methods-side-by-side", validate_parameters=False)
def side_by_side(cfg: TaskConfig, prepared: dict, adapters: dict[str, str], methods: list[str]) -> dict[str, tuple | Exception]:
    """The methods of one wave submitted at once (each with `scale.method_gpus` GPUs), collected; a failure is returned."""
    with reserving(cfg.scale.runner, cfg.scale.method_gpus):
        futures = {method: method_task.submit(method, cfg, prepared, adapters) for method in methods}
    outcomes: dict[str, tuple | Exception] = {}
    for method, future in futures.items():
        try:
            outcomes[method] = future.result()
        except Exception as exc:  # noqa: BLE001 (returned: the flow records it as that method's failure)
            outcomes[method] = exc
    return outcomes


def _train_wave(run: _Run, methods: list[str]) -> dict[str, str | Exception]:
    """Each method's adapter folder, or the exception that ended it: side by side on a cluster (`scale.runner: ray | dask`,
    more than one method), else one after another in this process."""
    if run.cfg.scale.runner != "local" and len(methods) > 1:
        runner = cluster_runner(run.cfg.scale.runner, run.cfg.scale.address, "scale.address")
        outcomes = side_by_side.with_options(task_runner=runner)(run.cfg, run.prepared, run.adapters, methods)
        trained: dict[str, str | Exception] = {}
        for method, outcome in outcomes.items():
            if isinstance(outcome, Exception):
                trained[method] = outcome
                continue
            trained[method], summary, teacher_on_eval = outcome
            run.summary |= {k: v for k, v in summary.items() if k not in ("task", "variants", "pool")}
            run.teacher_on_eval = teacher_on_eval or run.teacher_on_eval
        return trained
    trained = {}
    for method in methods:
        try:
            trained[method] = STEPS[method](run)
        except Exception as exc:  # noqa: BLE001 (recorded, named at the end of the run)
            trained[method] = exc
    return trained


def _distill(cfg: TaskConfig, extra_pool: str | None) -> dict:
    prepared = prepare_data(cfg, extra_pool)
    run = _Run(cfg, prepared, summary={"task": cfg.name, "variants": {}, "pool": prepared["pool"]})
    failed: dict[str, str] = {}
    for wave in waves(cfg):  # each method after the ones it needs (`TaskConfig.needs`); a wave's methods need none of each other
        ready = []
        for method in wave:
            missing = [need for need in cfg.needs(method) if need not in run.adapters]
            if missing:
                failed[method] = f"needs this run's {', '.join(missing)} adapter, which did not finish"
            else:
                ready.append(method)
        for method, outcome in _train_wave(run, ready).items():
            if isinstance(outcome, Exception):
                failed[method] = f"{type(outcome).__name__}: {outcome}"
                get_run_logger().error("%s failed; the other methods go on: %s", method, failed[method])
            else:
                run.adapters[method] = outcome
    adapters, summary, teacher_on_eval = run.adapters, run.summary, run.teacher_on_eval
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    eval_dir = evaluate_task(cfg, prepared["eval"], adapters, str(cfg.work_dir / cfg.name / f"eval-{stamp}"), teacher_on_eval)
    summary |= {"eval_dir": eval_dir, "report": str(Path(eval_dir) / "report.md")}
    for name in ["base", *(["teacher"] if teacher_on_eval else []), *adapters]:
        metrics = json.loads((Path(eval_dir) / f"{name}.metrics.json").read_text())
        summary["variants"][name] = {k: metrics[k] for k in KINDS[cfg.type].summary_keys if k in metrics}
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
