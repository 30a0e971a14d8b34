"""A task's data, read through its kind: files, demo rows, the teacher's pool, the three splits, the drift reference.

What differs between task types (a row's fields and checks) is the kind's (`core/kinds/base.py`); what is the same
for every type lives here, as functions of a kind. Kinds with `closed_labels` (classification) stratify every split by
label and balance the training rows; the others split their rows unstratified.

    kind = for_config(cfg)
    rows, source = labeled_rows(kind)                  # data.train, or the demo's rows
    train, validation, eval_rows = splits(kind, rows)
    pool, counts = unlabeled_pool(kind, held_out=validation + eval_rows)
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

from core.common.files import nonempty_records
from core.common.rows import Example
from core.common.splits import balance, distinct_inputs, document_split, stratified_holdout, stratified_split
from core.errors import DataError
from core.kinds.base import TaskKind

_PARSED: dict[tuple, tuple[Example, ...]] = {}  # (file, its mtime and size, require_answers, config) -> rows
_PARSED_KEEP = 16  # files remembered: a run's splits, pool and eval file
_PARSED_LOCK = threading.Lock()


def label_set(kind: TaskKind) -> list[str] | None:
    """The closed set every answer is one of (the task's labels where the kind has `closed_labels`), or None for free
    text: KD then matches the teacher's distribution over these (else its top-k tokens, where the tokenizers agree),
    and a user's preference pair's sides must be among them."""
    return kind.cfg.labels if kind.closed_labels else None


def split(kind: TaskKind, rows: list[Example]) -> tuple[list[Example], list[Example]]:
    """(rows left for training, eval rows) out of one labeled set: stratified by label where the kind has closed labels."""
    d, seed = kind.cfg.data, kind.cfg.training.seed
    if kind.closed_labels:
        return stratified_split(rows, kind.cfg.labels, d.eval_fraction, d.eval_per_class, seed)
    return document_split(rows, d.train_per_class, d.eval_per_class, seed, d.eval_fraction)


# Rows per class held out of a method's rows where validation is needed or asked for (at most a quarter of a class).
VALIDATION_PER_CLASS = 20


def validation_per_class(kind: TaskKind, labeled: bool = True) -> int:
    """Rows per class held out to pick the best step and stop early: `training.validation_per_class` where set. Unset,
    labeled rows (`labeled`) hold none back unless the run's self-training needs them (it chooses its confidence
    threshold on rows its labeler never trained on): every row trains and the plan runs to its end. Twenty rows per
    class cannot tell one step from another (75 rows: +/-0.11 at 95%), and on the development half the rows trained
    better than they validated: macro-F1 with / without the split, same day, one run each (`docs/training.md`):
    loans 0.500 / 0.476, shipping 0.579 / 0.634, alerts 0.789 / 0.840, reviews 0.917 / 0.944 (mean 0.696 / 0.724;
    `docs/results/generalize-development-every-row.json`). A KD run's traces (the
    pool's: they cost no labeled row) hold out VALIDATION_PER_CLASS, as its plan was chosen with."""
    asked = kind.cfg.training.validation_per_class
    if asked is not None:
        return asked
    return VALIDATION_PER_CLASS if not labeled or "selftrain" in kind.cfg.methods else 0


def hold_out_validation(kind: TaskKind, rows: list[Example], labeled: bool = True) -> tuple[list[Example], list[Example]]:
    """(rows left for training, validation rows) out of a method's rows (`validation_per_class`; 0 = none): per label
    where the kind has closed labels (never more than a quarter of a label's rows), else the first rows."""
    n = validation_per_class(kind, labeled)
    if not n:
        return rows, []
    if kind.closed_labels:
        return stratified_holdout(rows, kind.cfg.labels, n, kind.cfg.training.seed)
    return rows[n:], rows[:n]


def train_rows(kind: TaskKind, rows: list[Example]) -> list[Example]:
    """The rows training runs on, out of the rows left for it: balanced by label to `data.train_per_class` each where
    the kind has closed labels, else at most `data.train_per_class`."""
    if kind.closed_labels:
        return balance(rows, kind.cfg.labels, kind.cfg.data.train_per_class, kind.cfg.training.seed)
    return rows[: kind.cfg.data.train_per_class]


def splits(
    kind: TaskKind, rows: list[Example], eval_rows: list[Example] | None = None
) -> tuple[list[Example], list[Example], list[Example]]:
    """(train, validation, eval) rows: eval held out first (unless given), validation out of the rest, then the training rows."""
    if eval_rows is None:
        rows, eval_rows = split(kind, rows)
    rows, validation = hold_out_validation(kind, rows)
    return train_rows(kind, rows), validation, eval_rows


def load_rows(kind: TaskKind, path: str | Path, require_answers: bool = True) -> list[Example]:
    """The task's rows from a JSONL/CSV file; bad rows stop here, naming file, line and field.

    Parsed once per process for the same file content and task config: the flow's Prefect tasks pass paths (each
    reads the split `prepare_data` wrote), and a run's tasks share its process, so the second read is a lookup."""
    path = Path(path)
    stat = path.stat() if path.exists() else None
    key = (str(path.resolve()), stat and (stat.st_mtime_ns, stat.st_size), require_answers, kind.cfg.model_dump_json())
    with _PARSED_LOCK:
        if stat is not None and key in _PARSED:
            return list(_PARSED[key])
    rows = kind.parse_records(nonempty_records(path), path, require_answers)
    with _PARSED_LOCK:
        _PARSED[key] = tuple(rows)
        while len(_PARSED) > _PARSED_KEEP:
            del _PARSED[next(iter(_PARSED))]  # the oldest first
    return rows


def labeled_rows(kind: TaskKind) -> tuple[list[Example], str]:
    """Every labeled row of the task (`data.train`, or its demo's) and where they came from."""
    if kind.cfg.data.train is not None:
        return load_rows(kind, kind.cfg.data.train), str(kind.cfg.data.train)
    demo, d = kind.cfg.demo(), kind.cfg.data.demo
    source = f"{demo.name} generator (n={d.n_rows}, seed={d.seed})"
    return rows_from_records(kind, demo.generate(d.n_rows, d.seed), source), source


def unlabeled_pool(
    kind: TaskKind, held_out: list[Example] | None = None, first: list[Example] | None = None
) -> tuple[list[Example], dict[str, int]]:
    """The inputs the teacher answers: `first` (a retrain's drifted traffic), then `data.unlabeled`, or (demo) fresh
    demo rows without their answers; repeated inputs and inputs of `held_out` rows (validation, evaluation) dropped
    and counted, then at most `teacher.max_pool`."""
    limit = kind.cfg.teacher.max_pool
    if first:
        rest = unlabeled_pool(kind, held_out)[0] if (kind.cfg.data.unlabeled is not None or kind.cfg.data.train is None) else []
        rows, counts = distinct_inputs(first + rest, held_out or [])
        return (rows[:limit] if limit else rows), counts | {"from_traffic": len(first)}
    if kind.cfg.data.unlabeled is not None:
        rows = load_rows(kind, kind.cfg.data.unlabeled, require_answers=False)
    elif kind.cfg.data.train is None:
        d = kind.cfg.data.demo
        rows = rows_from_records(kind, kind.cfg.demo().pool(limit or d.n_rows, d.seed + 1), "<demo pool>", require_answers=False)
    else:
        raise DataError("<config>", None, "data.unlabeled", f"methods {kind.cfg.methods} need an unlabeled pool for the teacher")
    rows, counts = distinct_inputs(rows, held_out or [])
    return (rows[:limit] if limit else rows), counts


def rows_from_records(kind: TaskKind, records: list[dict], source: str, require_answers: bool = True) -> list[Example]:
    """Records in the task's file format (a demo's, say) as examples, checked as a file's rows are."""
    return kind.parse_records(list(enumerate(records, start=1)), Path(source), require_answers)


def reference_rows(kind: TaskKind) -> tuple[list[Example], str]:
    """Inputs of the task's own distribution for the drift reference, and where they came from: `data.unlabeled`,
    else (demo) fresh demo rows, else the eval file, else the eval split. Never training rows: the adapter is
    surer of those than of anything new, which would make every night look drifted."""
    n, seed = kind.cfg.drift.reference_size, kind.cfg.data.demo.seed
    if kind.cfg.data.unlabeled is not None:
        rows, source = load_rows(kind, kind.cfg.data.unlabeled, require_answers=False), str(kind.cfg.data.unlabeled)
    elif kind.cfg.data.train is None:
        records = kind.cfg.demo().pool(n, seed + 1000)  # seeds of its own: neither the training rows nor the teacher's pool
        rows, source = rows_from_records(kind, records, "<demo reference>", require_answers=False), f"{kind.cfg.demo().name} generator"
    elif kind.cfg.data.eval is not None:
        rows, source = load_rows(kind, kind.cfg.data.eval), str(kind.cfg.data.eval)
    else:
        rows, source = (
            split(kind, labeled_rows(kind)[0])[1],
            "the eval split (stratified, capped per class: label shares may differ from traffic's)",
        )
    rows = random.Random(seed).sample(rows, n) if len(rows) > n else rows
    return rows, source
