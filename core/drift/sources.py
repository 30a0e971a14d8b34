"""What drift loads and asks: the sentence embedder, the reference answers of the production adapter, and the
teacher's answers to a sample of the window (the agreement that estimates quality without labels)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.common.files import atomic_write_text
from core.common.rows import Example, text_sha256
from core.drift.windows import Reference, Window
from core.errors import TeacherUnavailable
from core.evaluation.cost import cost_usd, price_for
from core.model.loading import activate_adapter, load_model
from core.teachers.base import Teacher
from core.teachers.deliberate import load_embedder
from core.teachers.traces import TraceStore, generate_traces


# -- the pieces that touch models, the registry and the teacher ------------------------------------
def sentence_embedder() -> Callable[[list[str]], np.ndarray]:
    """Texts -> unit-length all-MiniLM-L6-v2 vectors (the deliberate teacher's embedder, offline)."""
    model = load_embedder()
    return lambda texts: model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)


def load_reference(cfg, kind, registry, task: str, ref: str, cache_dir, inputs: Callable[[], tuple[list[Example], str]]) -> Reference:
    """The production adapter's answers to the task's reference inputs (`inputs()`: rows and where they came from,
    `core.kinds.data.reference_rows`, read only on a cache miss), computed once per version and kept in `cache_dir` (a new version gets its own)."""

    cache = Path(cache_dir) / f"reference-{ref.replace('/', '-')}.json"
    eval_metrics = {k: v for k, v in registry.metrics(task, ref).items() if not isinstance(v, dict | list)}
    if cache.exists():
        saved = json.loads(cache.read_text())
        return Reference(ref, saved["source"], saved["inputs"], saved["views"], eval_metrics)
    rows, source = inputs()
    model, tokenizer = load_model(cfg.model, kind.settings)
    adapter = registry.path(task, ref)
    model = activate_adapter(model, adapter, name="production")
    answers = kind.reference_answers(kind.decoder(model, tokenizer, adapter), [r.text for r in rows])
    views = [v for v in (kind.drift_view(a) for a in answers) if v is not None]
    atomic_write_text(cache, json.dumps({"ref": ref, "source": source, "inputs": [r.text for r in rows], "views": views}))
    return Reference(ref, source, [r.text for r in rows], views, eval_metrics)


def ask_teacher(
    cfg, kind, window: Window, traces_file, load_teacher: Callable[[], Teacher]
) -> tuple[tuple[int, int] | None, str | None, float]:
    """The teacher (`load_teacher`, called once if anything is asked) answers up to `drift.teacher_sample` of the
    window's production answers (within the night's budget, cached as traces); return (agreeing, asked) or None with
    the reason, and the cost. A teacher that is down leaves the agreement unknown, never zero."""

    d = cfg.drift
    sample = [(text, view) for text, view in window.answers if text is not None][: d.teacher_sample]
    if not sample:
        return None, "drift.teacher_sample is 0 or no input was kept" if not d.teacher_sample else "no inputs logged", 0.0
    price = price_for(cfg.teacher.model or cfg.teacher.backend, cfg.teacher.prices)
    per_answer = cost_usd(np.mean([len(t) / 3 for t, _ in sample]) + 200, 64, price)  # a rough estimate, to cap the sample
    if per_answer > 0:
        sample = sample[: max(int(d.teacher_budget_usd / per_answer), 0)]
    rows = [Example(f"drift-{i}", text) for i, (text, _) in enumerate(sample)]
    store = TraceStore(traces_file)
    try:
        summary = generate_traces(rows, store, load_teacher, prices=cfg.teacher.prices, progress=False)
    except TeacherUnavailable as exc:
        return None, f"teacher unavailable: {exc}", 0.0
    finally:
        store.close()

    hits = n = 0
    for text, view in sample:
        trace = store.traces.get(text_sha256(text))
        if trace and not trace.get("error"):
            n += 1
            hits += kind.agrees(view, trace["output"])
    if n == 0:
        return (
            None,
            f"the teacher answered none of {len(sample)} inputs ({summary.get('failure_reasons') or 'failed'})",
            summary["cost_usd"],
        )
    return (hits, n), None, summary["cost_usd"]
