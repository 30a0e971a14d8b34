"""A task's data through its kind: files parsed once per content, splits that follow `closed_labels`."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from core.common.config import TaskConfig
from core.common.rows import Example
from core.errors import DataError
from core.kinds import for_config
from core.kinds.classification import Classification
from core.kinds.data import VALIDATION_PER_CLASS, hold_out_validation, label_set, load_rows, split, train_rows, validation_per_class
from core.settings import ModelSettings

LABELS = ["Good", "Standard", "Bad"]


def _write(path, n_per_label: int, labels=LABELS) -> None:
    path.write_text(
        "".join(json.dumps({"text": f"row {i} {label}", "label": label}) + "\n" for label in labels for i in range(n_per_label))
    )


def test_a_file_is_parsed_once_until_it_changes(tmp_path, monkeypatch):
    data = tmp_path / "train.jsonl"
    _write(data, 4)
    kind = for_config(TaskConfig(labels=LABELS), ModelSettings())
    calls = []
    parse = Classification.parse_records
    monkeypatch.setattr(Classification, "parse_records", lambda self, *a: calls.append(a[1]) or parse(self, *a))
    first = load_rows(kind, data)
    assert load_rows(kind, data) == first and len(calls) == 1  # the second read of the same content is a lookup
    load_rows(kind, data).clear()  # a caller's list is its own: emptying it leaves the next caller's rows whole
    assert len(load_rows(kind, data)) == 12 and len(calls) == 1
    _write(data, 5)
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 1_000_000))
    assert len(load_rows(kind, data)) == 15 and len(calls) == 2  # changed content is read again
    other = for_config(TaskConfig(labels=["Good", "Standard", "Bad", "Unknown"]), ModelSettings())
    load_rows(other, data)
    assert len(calls) == 3  # another config (another label set) parses for itself


def test_a_bad_file_is_refused_every_time_it_is_read(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "x", "label": "Excellent"}\n')
    kind = for_config(TaskConfig(labels=LABELS), ModelSettings())
    for _ in range(2):  # nothing half-parsed is remembered
        with pytest.raises(DataError, match=r"bad.jsonl:1: field 'label'"):
            load_rows(kind, data)


def test_closed_labels_stratify_and_balance_free_text_does_not():
    cfg = TaskConfig(labels=LABELS)
    cfg.data.eval_per_class, cfg.data.train_per_class, cfg.training.validation_per_class = 2, 10, 1
    kind = for_config(cfg, ModelSettings())
    rows = [Example(f"{label}-{i}", f"t {label} {i}", label) for label in LABELS for i in range(8)]
    rows += [Example(f"Bad-x{i}", f"t Bad x{i}", "Bad") for i in range(8)]  # imbalanced: Bad 16, the others 8
    rest, eval_rows = split(kind, rows)
    # A fifth of each class (data.eval_fraction), at least one, at most eval_per_class: Bad 16 -> 3 -> 2; 8 -> 1.
    assert Counter(r.label for r in eval_rows) == {"Bad": 2, "Good": 1, "Standard": 1}
    rest, validation = hold_out_validation(kind, rest)
    assert sorted(r.label for r in validation) == sorted(LABELS)
    trained = train_rows(kind, rest)
    assert {label: sum(r.label == label for r in trained) for label in LABELS} == dict.fromkeys(LABELS, 10)
    assert label_set(kind) == LABELS

    free = for_config(TaskConfig(type="idp"), ModelSettings())
    free.cfg.data.train_per_class, free.cfg.training.validation_per_class = 5, 2
    docs = [Example(f"d{i}", f"doc {i}", "{}") for i in range(9)]
    kept, validation = hold_out_validation(free, docs)
    assert validation == docs[:2] and kept == docs[2:]  # the first rows: nothing to stratify by
    assert train_rows(free, kept) == docs[2:7] and label_set(free) is None


def test_labeled_rows_are_held_out_for_validation_only_where_a_method_needs_them_or_the_file_asks():
    rows = [Example(f"{label}-{i}", f"t {label} {i}", label) for label in LABELS for i in range(120)]
    kind = for_config(TaskConfig(labels=LABELS), ModelSettings())
    assert validation_per_class(kind) == 0 and hold_out_validation(kind, rows) == (rows, [])  # every labeled row trains
    kept, traces = hold_out_validation(kind, rows, labeled=False)  # KD's traces: a pool's, they cost no labeled row
    assert Counter(r.label for r in traces) == dict.fromkeys(LABELS, VALIDATION_PER_CLASS) and len(kept) == 360 - 60
    selftrain = for_config(TaskConfig(labels=LABELS, methods=["sft", "selftrain"]), ModelSettings())
    assert validation_per_class(selftrain) == VALIDATION_PER_CLASS  # its threshold: rows its labeler never trained on
    kind.cfg.training.validation_per_class = 5  # the task file's own number wins, either way
    assert validation_per_class(kind) == 5 and validation_per_class(kind, labeled=False) == 5
