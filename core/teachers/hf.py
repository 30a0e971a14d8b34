"""The `hf` backend: a local transformers model (any precision the model layer supports), answering
zero-shot through the task kind's decoder."""

from __future__ import annotations

from pathlib import Path

from core.common.config import TaskConfig
from core.errors import TeacherUnavailable
from core.model.loading import load_model
from core.settings import ModelSettings
from core.teachers.base import Teacher, TeacherAnswer, TeacherTask


def check_hf_source(source: str, settings: ModelSettings) -> None:
    """Refuse a teacher model that is neither the embedded one nor on disk while the hub is off."""
    if source == "embedded" or Path(source).exists():
        return
    if settings.hf_hub_offline:
        raise TeacherUnavailable(f"teacher.model: {source!r} is not a local folder or file (and the hub is offline: HF_HUB_OFFLINE=1)")


class HFTeacher(Teacher):
    def __init__(self, cfg: TaskConfig, task: TeacherTask, settings: ModelSettings, adapter: str | Path | None = None) -> None:
        """`adapter`: a LoRA adapter over that model answering instead (self-training's zero-shot labeler), decoded as
        the service decodes it."""
        source = cfg.teacher.model or "embedded"
        check_hf_source(source, settings)
        model, tokenizer = load_model(cfg.model.model_copy(update={"base_model": source}), settings, adapter=adapter)
        self.name = f"hf:{source}" + (f"+{adapter_label(adapter)}" if adapter else "")
        self.task, self.top_k = task, cfg.teacher.top_logprobs
        self.batch_size = cfg.eval_batch_size
        task.attach(model, tokenizer, calibrated=True, adapter=Path(adapter) if adapter else None)

    def answer(self, texts: list[str]) -> list[TeacherAnswer]:
        return self.task.answer(texts, self.top_k)


def adapter_label(adapter: str | Path) -> str:
    """`sft-1a2b3c` for `.../sft-1a2b3c/adapter`: which run's adapter answered, in every trace."""
    path = Path(adapter)
    return path.parent.name if path.name == "adapter" else path.name
