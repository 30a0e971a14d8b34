"""Knowledge distillation: train on the teacher's answers to the pool, matching its distribution where it gives one
(section `kd`; needs this run's `sft` when the deliberate teacher runs that adapter). The task kind supplies the rows
(`kd_rows`); a kind with closed labels has the loss match the teacher's distribution over them and its student's
lean relative to the teacher stored beside the adapter (`store_student_lean`); early stopping watches agreement with
the teacher on traces held out of training.

    adapter_dir, stats, counts = train(cfg, traces, checkpoint_dir, out_dir)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.common.config import TaskConfig
from core.common.rows import Example, json_sha256
from core.kinds import for_config
from core.kinds.classification import trace_distribution
from core.kinds.data import hold_out_validation, label_set
from core.methods.base import run_dir, validator
from core.model.calibrated import CalibratedDecoder, save_label_prior
from core.model.loading import load_model
from core.settings import ModelSettings
from core.training.data_parallel import main_process
from core.training.kd_trainer import train_kd
from core.training.sft_trainer import TrainStats

PRIOR_INPUTS = 256  # pool inputs a KD student's label prior is averaged over (~30 s on 2 CPU cores)


def check(cfg: TaskConfig) -> None:
    """Every task type distils (classification: label distributions; generation: answers and top-k tokens)."""


def run_folder(cfg: TaskConfig, traces: list[dict], fingerprint: dict) -> Path:
    """KD's run folder: its key holds the teacher's identity and the content of its answers, so a student trained on
    another teacher (or on other answers to the same inputs) is never taken for this one's."""
    answers = sorted(
        json_sha256([t["input_sha256"], t.get("output"), t.get("label_probs"), t.get("top_logprobs"), t.get("teacher")]) for t in traces
    )
    teacher = {"backend": cfg.teacher.backend, "model": cfg.teacher.model, "base_url": cfg.teacher.base_url}
    return run_dir(cfg, "kd", {"traces_sha256": json_sha256(answers), "teacher": teacher, "kd": cfg.kd.model_dump(), **fingerprint})


def train(
    cfg: TaskConfig,
    settings: ModelSettings,
    traces: list[dict],
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    progress: bool = True,
    source: str = "<traces>",
) -> tuple[Path, TrainStats, dict]:
    """Train (or resume) a KD adapter on usable traces; return it, its stats and the rows' counts."""
    kind = for_config(cfg, settings)
    answers = [Example(t["id"], t["prompt"], t["output"]) for t in traces]
    kept, validation = hold_out_validation(kind, answers, labeled=False)
    if len(validation) < 2 * len(set(e.label for e in answers)):
        kept, validation = answers, []  # too few traces to tell one step from another: train on them all
    held = {e.id for e in validation}
    train_traces = [t for t in traces if t["id"] not in held]
    rows, counts = kind.kd_rows(train_traces)
    validate = validator(cfg, settings, validation)
    labels = label_set(kind)
    adapter_dir, stats = train_kd(
        cfg, settings, rows, kept, checkpoint_dir, out_dir, labels=labels, progress=progress, source=source, validate=validate
    )
    if labels is not None and main_process():
        store_student_lean(cfg, settings, adapter_dir, train_traces)
    return adapter_dir, stats, counts | {"validation_traces": len(validation)}


def store_student_lean(cfg: TaskConfig, settings: ModelSettings, adapter_dir: Path, traces: list[dict]) -> None:
    """Store the student's lean relative to its teacher beside the adapter; its decoder divides it out.

    Per label the teacher answered, the student's mean distribution over those inputs is set against the
    teacher's mean distribution over the same inputs; the ratio, averaged over labels (so each label counts
    once, as in the balanced training rows), is the prior stored (`label_prior.json`). A student that answers
    as its teacher does has a flat ratio and is left alone; one that leans toward a label more than its
    teacher is corrected. Dividing out the student's plain mean on the pool instead (batch calibration, Zhou
    et al. 2024: the first version) also removes the pool's true label shares: it lifted a student of the
    weak demo teacher (0.30 -> 0.38 macro-F1) but cost a student of a strong teacher its commonest class.
    """
    model, tokenizer = load_model(cfg.model, settings, adapter=adapter_dir)
    decoder = CalibratedDecoder(model, tokenizer, cfg.labels, cfg.instruction, calibrate=False, batch_size=cfg.eval_batch_size)
    by_answer: dict[str, list[dict]] = {}
    for trace in traces:
        by_answer.setdefault(trace["output"], []).append(trace)
    per_label = max(1, PRIOR_INPUTS // max(len(by_answer), 1))
    student, teacher, inputs = [], [], 0
    for group in by_answer.values():
        sample = group[:per_label]
        inputs += len(sample)
        student.append(decoder.label_distribution([t["prompt"] for t in sample]).mean(axis=0))
        teacher.append(np.mean([trace_distribution(t, cfg.labels) for t in sample], axis=0))
    ratio = np.mean(student, axis=0) / np.clip(np.mean(teacher, axis=0), 1e-6, None)
    save_label_prior(adapter_dir, cfg.labels, ratio / ratio.sum(), inputs, "the student's lean relative to its teacher on the pool")
