"""train_sft, train_kd, train_dpo: one coarse task per training run; each resumes from its last checkpoint."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from prefect import get_run_logger, task

from core.common.config import TaskConfig
from core.common.records import atomic_write_text, fsync_folder, json_sha256, text_sha256
from core.errors import DataError
from core.kinds import kind_of
from core.model.loading import load_model, load_tokenizer
from core.teachers.traces import TraceStore
from core.training.dpo import load_pairs, train_dpo
from core.training.sft import TrainStats, train_sft


def run_dir(cfg: TaskConfig, method: str, fingerprint: dict) -> Path:
    """Same data and settings -> same folder, so a crashed run finds its checkpoints again."""
    key = [fingerprint, cfg.training.model_dump(), cfg.model.model_dump(), cfg.instruction]
    return cfg.work_dir / cfg.name / f"{method}-{json_sha256(key, 12)}"


def kd_run_dir(cfg: TaskConfig, traces: list[dict], fingerprint: dict) -> Path:
    """KD's run folder: its key holds the teacher's identity and the content of its answers, so a student trained on
    another teacher (or on other answers to the same inputs) is never taken for this one's."""
    answers = sorted(
        json_sha256([t["input_sha256"], t.get("output"), t.get("label_probs"), t.get("top_logprobs"), t.get("teacher")]) for t in traces
    )
    teacher = {"backend": cfg.teacher.backend, "model": cfg.teacher.model, "base_url": cfg.teacher.base_url}
    return run_dir(cfg, "kd", {"traces_sha256": json_sha256(answers), "teacher": teacher, "kd": cfg.kd.model_dump(), **fingerprint})


def trained_once(folder: Path, method: str, train: Callable[[Path, Path], tuple[Path, TrainStats]]) -> str:
    """Train into `folder/adapter` unless a finished adapter is already there; return the adapter folder.

    `train(checkpoint_dir, adapter_dir)` resumes from its checkpoints; `train_stats.json`, written last,
    marks the adapter complete, so a rerun after a crash trains again and a rerun after success does not.
    """
    logger = get_run_logger()
    adapter_dir, done = folder / "adapter", folder / "adapter" / "train_stats.json"
    if done.exists():
        logger.info("%s adapter already trained at %s; skipping", method, adapter_dir)
        return str(adapter_dir)
    adapter_dir, stats = train(folder / "checkpoints", adapter_dir)
    fsync_folder(adapter_dir)  # the adapter's files are on disk before the marker says they are complete
    atomic_write_text(done, json.dumps(asdict(stats), indent=2))
    logger.info(
        "%s: %d of %d planned steps (%.3g epochs), %.0f tokens/s, final loss %s, kept step %s",
        method,
        stats.steps,
        stats.planned_steps,
        stats.epochs,
        stats.tokens_per_s,
        stats.final_loss,
        stats.best_step or stats.steps,
    )
    return str(adapter_dir)


@task(name="train_sft", retries=1, retry_delay_seconds=5)
def train_sft_task(cfg: TaskConfig, train_path: str, fingerprint: dict, validation_path: str | None = None) -> str:
    """Train an SFT adapter, keeping the best step on the validation rows (when there are any); return its folder."""
    kind = kind_of(cfg)

    def train(checkpoints: Path, out: Path) -> tuple[Path, TrainStats]:
        validation = kind.load_rows(cfg, validation_path) if fingerprint.get("n_validation") else []
        tokenizer = load_tokenizer(cfg.model)
        validate = (lambda model: kind.validation_score(cfg, model, tokenizer, validation)) if validation else None
        return train_sft(cfg, kind.load_rows(cfg, train_path), checkpoints, out, source=train_path, validate=validate)

    return trained_once(run_dir(cfg, "sft", fingerprint), "SFT", train)


@task(name="train_selftrain", retries=1, retry_delay_seconds=5)
def train_selftrain_task(
    cfg: TaskConfig,
    train_path: str,
    validation_path: str,
    pool_traces_file: str,
    validation_traces_file: str,
    fingerprint: dict,
    labeler_choice: dict | None = None,
) -> str:
    """Train again on the gold rows plus the SFT labeler's confident pool answers; return the adapter folder.

    The confidence threshold is chosen on the labeler's answers to the validation rows (`self_training.min_precision`);
    the choice and the rows it added are written beside the adapter (`self_training.json`)."""
    logger = get_run_logger()
    kind = kind_of(cfg)
    if not fingerprint.get("n_validation"):
        raise DataError(
            validation_path, None, None, "selftrain chooses its threshold on the validation split: set training.validation_per_class"
        )
    validation = kind.load_rows(cfg, validation_path)
    pool_store, checked_store = TraceStore.read(pool_traces_file), TraceStore.read(validation_traces_file)
    added, report = kind.confident_rows(cfg, validation, checked_store.traces, list(pool_store.traces.values()))
    logger.info("self-training: %s", report)
    gold = list({r.id: r for r in kind.load_rows(cfg, train_path)}.values())  # train.jsonl repeats minority rows
    rows = kind.train_rows(cfg, gold + added)
    report |= {"gold_rows": len(gold), "training_rows_after_balancing": len(rows), "labeler_choice": labeler_choice}
    folder = run_dir(cfg, "selftrain", {"added": sorted(text_sha256(r.text) + r.label for r in added), **fingerprint})

    def train(checkpoints: Path, out: Path) -> tuple[Path, TrainStats]:
        tokenizer = load_tokenizer(cfg.model)
        validate = lambda model: kind.validation_score(cfg, model, tokenizer, validation)  # noqa: E731
        adapter_dir, stats = train_sft(cfg, rows, checkpoints, out, source=f"{train_path} + {pool_traces_file}", validate=validate)
        atomic_write_text(adapter_dir / "self_training.json", json.dumps(report, indent=2))
        return adapter_dir, stats

    return trained_once(folder, "self-training", train)


@task(name="train_kd", retries=1, retry_delay_seconds=5)
def train_kd_task(cfg: TaskConfig, traces_file: str, fingerprint: dict) -> str:
    """Train a KD adapter on the usable teacher traces of the unlabeled pool; return its folder."""
    logger = get_run_logger()
    store = TraceStore.read(traces_file)
    traces, failed = store.usable(), len(store.traces) - len(store.usable())
    if not traces:
        raise DataError(traces_file, None, None, f"no usable teacher traces ({failed} failed): nothing to distill")
    kind = kind_of(cfg)
    folder = kd_run_dir(cfg, traces, fingerprint)

    def train(checkpoints: Path, out: Path) -> tuple[Path, TrainStats]:
        logger.info("KD on %d teacher traces (%d failed traces left out)", len(traces), failed)
        adapter_dir, stats, counts = kind.train_kd(cfg, traces, checkpoints, out, source=traces_file)
        logger.info("KD rows: %s", counts)
        return adapter_dir, stats

    return trained_once(folder, "KD", train)


@task(name="train_dpo", retries=1, retry_delay_seconds=5)
def train_dpo_task(
    cfg: TaskConfig, train_path: str, start_adapter: str | None, fingerprint: dict, teacher_traces_file: str | None = None
) -> str:
    """Train a DPO adapter on user pairs (`data.preferences`) or pairs built on-policy; return its folder."""
    logger = get_run_logger()
    kind = kind_of(cfg)
    traces_sha256 = json_sha256(sorted(map(str, TraceStore.read(teacher_traces_file).usable()))) if teacher_traces_file else None
    key = {"start": start_adapter, "dpo": cfg.dpo.model_dump(), "teacher": teacher_traces_file, "traces_sha256": traces_sha256}
    folder = run_dir(cfg, "dpo", key | fingerprint)

    def train(checkpoints: Path, out: Path) -> tuple[Path, TrainStats]:
        if cfg.data.preferences is not None:
            pairs, source = load_pairs(cfg.data.preferences, kind.pair_labels(cfg)), str(cfg.data.preferences)
            counts = {"user": len(pairs)}
        else:
            traces = TraceStore.read(teacher_traces_file).usable() if teacher_traces_file else None
            model, tokenizer = load_model(cfg.model, adapter=start_adapter)
            decoder = kind.decoder(cfg, model, tokenizer, adapter=start_adapter)
            pairs, counts = kind.preference_pairs(cfg, kind.load_rows(cfg, train_path), decoder, traces)
            source = f"pairs built on-policy from {train_path}"
            del model, decoder
        logger.info("DPO pairs: %s", counts)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "pairs.json").write_text(json.dumps(counts, indent=2))
        adapter_dir, stats = train_dpo(cfg, pairs, checkpoints, out, start_adapter=start_adapter, source=source)
        (adapter_dir / "pairs.json").write_text(json.dumps(counts, indent=2))
        return adapter_dir, stats

    return trained_once(folder, "DPO", train)
