"""teacher_traces: the teacher labels a set of inputs; traces are cached on disk by input hash."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.runtime import task_run

from core.common.cluster import connect
from core.common.config import TaskConfig
from core.common.rows import json_sha256, text_sha256
from core.errors import TeacherUnavailable
from core.kinds import KINDS, for_config, teacher_loader
from core.kinds.data import load_rows
from core.methods import selftrain
from core.methods.selftrain import labeler_config
from core.settings import ModelSettings
from core.teachers.traces import TraceStore, generate_traces
from tasks.artifacts import artifact_key


def traces_path(cfg: TaskConfig, split: str, adapter: str | None = None) -> Path:
    """One trace file per teacher setup and split: changing the teacher never reuses another's answers."""
    t = cfg.teacher
    setup = {
        "teacher": t.model_dump(exclude={"concurrency", "timeout_s", "max_retries", "prices", "max_pool"}),
        "instruction": cfg.instruction,
        "labels": cfg.labels,
    }
    if t.backend != "openai":
        setup["model"] = cfg.model.model_dump(exclude={"device", "cpu_offload"})
    if adapter is not None:
        setup["adapter"] = str(adapter)
    return cfg.work_dir / cfg.name / "traces" / f"{t.backend}-{json_sha256(setup, 12)}" / f"{split}.jsonl"


RETRIES = 2  # attempts after the first; each asks again only what failed in transit


def import_stored_traces(cfg: TaskConfig, completions: list[dict]) -> dict:
    """Answers already paid for (`core.common.openai_files.read_stored_completions`) into the task's trace cache for its
    unlabeled pool, where `teacher_traces` finds them and asks the teacher only about the rest. A classification answer
    outside the task's labels is stored as failed, with the reason, and never asked again."""
    store = TraceStore(traces_path(cfg, "unlabeled"))
    labels = set(cfg.labels) if KINDS[cfg.type].closed_labels else None
    counts = {"imported": 0, "already_cached": 0, "outside_labels": 0}
    try:
        for completion in completions:
            key = text_sha256(completion["input"])
            if key in store:
                counts["already_cached"] += 1
                continue
            output = completion["output"].strip()
            trace = {
                "id": completion["id"],
                "input_sha256": key,
                "prompt": completion["input"],
                "output": output,
                "label_probs": None,  # a stored completion has no label distribution: KD takes its label as certain
                "top_logprobs": None,
                "teacher": f"stored:{completion['model']}",
                "latency_s": 0.0,
                "prompt_tokens": completion["prompt_tokens"],
                "completion_tokens": completion["completion_tokens"],
            }
            if labels is not None and output not in labels:
                trace["error"] = f"outside the label set: {output[:80]!r}"
                counts["outside_labels"] += 1
            else:
                counts["imported"] += 1
            store.append(trace)
    finally:
        store.close()
    return counts | {"path": str(store.path)}


@task(name="teacher_traces", retries=RETRIES, retry_delay_seconds=10)
def teacher_traces(
    cfg: TaskConfig, inputs_path: str, labeled_path: str, split: str, adapter: str | None = None, zero_shot: bool = False
) -> dict:
    """Ask the teacher about every input of `inputs_path` not yet traced; return the totals (and the file).
    `adapter`: this run's SFT adapter answers instead, the deliberate way or (`zero_shot`) as it is served
    (`teacher.from_sft`, self-training)."""
    logger = get_run_logger()
    if adapter is not None:  # only the local backends run an adapter
        cfg = labeler_config(cfg, zero_shot)
    settings = ModelSettings()  # the operator's, on the machine this task runs on
    kind = for_config(cfg, settings)
    rows = load_rows(kind, inputs_path, require_answers=False)
    store = TraceStore(traces_path(cfg, split, adapter))
    try:
        teacher = teacher_loader(cfg, settings, labeled_path, adapter)  # built only if something is left to ask
        cluster = connect(cfg.scale) if cfg.scale.runner != "local" else None  # connects now: a dead address fails the task here
        try:
            summary = generate_traces(
                rows, store, teacher, prices=cfg.teacher.prices, check=kind.teacher_task().endpoint().check, cluster=cluster
            )
        finally:
            if cluster is not None:  # a local Dask cluster it started stops here, not with the worker process
                cluster.close()
    finally:
        store.close()
    logger.info(
        "teacher %s on %s: %d traces (%d asked, %d cached, %d duplicates skipped), %d failed %s, cost $%.4f",
        summary["teacher"],
        split,
        summary["traces"],
        summary["asked"],
        summary["cached"],
        summary["duplicates_skipped"],
        summary["failed"],
        summary["failure_reasons"] or "",
        summary["cost_usd"],
    )
    if summary["failed_in_transit"] and task_run.run_count <= RETRIES:
        # Make the task's retry fire: it asks again only the inputs whose answers the transport lost.
        raise TeacherUnavailable(f"{summary['failed_in_transit']} teacher answers failed in transit; asking them again")
    create_table_artifact(
        key=artifact_key(cfg.name, "teacher", split), table=[{k: v for k, v in summary.items() if k != "failure_reasons"}]
    )
    return summary


@task(name="choose_labeler")
def choose_labeler(cfg: TaskConfig, validation_path: str, traces: dict[str, str]) -> dict:
    """The self-training labeler's mode with the better primary metric on the validation rows (`traces`: mode -> the
    file of its answers to them); both figures are returned and logged."""
    settings = ModelSettings()  # the operator's, on the machine this task runs on
    rows = load_rows(for_config(cfg, settings), validation_path)
    choice = selftrain.choose_labeler(cfg, settings, rows, {mode: TraceStore.read(path).traces for mode, path in traces.items()})
    get_run_logger().info("self-training labeler: %s (validation %s %s)", choice["mode"], choice["metric"], choice["validation"])
    return choice
