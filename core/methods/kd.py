"""Knowledge distillation: train on the teacher's answers to the pool, matching its distribution where it gives one
(section `kd`; needs this run's `sft` when the deliberate teacher runs that adapter). The task kind supplies the rows
(`kd_rows`), the labels whose distribution the loss matches (`label_set`) and what is stored after (`after_kd`);
early stopping watches agreement with the teacher on traces held out of training.

    adapter_dir, stats, counts = train(cfg, traces, checkpoint_dir, out_dir)
"""

from __future__ import annotations

from pathlib import Path

from core.common.config import TaskConfig
from core.common.rows import Example, json_sha256
from core.kinds import for_config
from core.methods.base import run_dir, validator
from core.training.kd import train_kd
from core.training.sft import TrainStats


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
    traces: list[dict],
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    progress: bool = True,
    source: str = "<traces>",
) -> tuple[Path, TrainStats, dict]:
    """Train (or resume) a KD adapter on usable traces; return it, its stats and the rows' counts."""
    kind = for_config(cfg)
    answers = [Example(t["id"], t["prompt"], t["output"]) for t in traces]
    kept, validation = kind.hold_out_validation(answers, strict=False)
    if len(validation) < 2 * len(set(e.label for e in answers)):
        kept, validation = answers, []  # too few traces to tell one step from another: train on them all
    held = {e.id for e in validation}
    train_traces = [t for t in traces if t["id"] not in held]
    rows, counts = kind.kd_rows(train_traces)
    validate = validator(cfg, validation)
    adapter_dir, stats = train_kd(
        cfg, rows, kept, checkpoint_dir, out_dir, labels=kind.label_set(), progress=progress, source=source, validate=validate
    )
    kind.after_kd(adapter_dir, train_traces)
    return adapter_dir, stats, counts | {"validation_traces": len(validation)}
