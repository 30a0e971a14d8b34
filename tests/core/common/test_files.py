"""Task files read one way: JSONL and CSV alike, bad rows named by file, line and field."""

import json

import pytest

from core.common.config import TaskConfig
from core.errors import DataError
from core.kinds import for_config
from core.kinds.data import load_rows
from core.settings import ModelSettings

LABELS = ["Good", "Standard", "Bad"]


def load_classification(path, labels):
    return load_rows(for_config(TaskConfig(labels=labels), ModelSettings()), path)


def write(tmp_path, name, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_loads_jsonl_and_csv_alike(tmp_path):
    rows = [{"text": "a", "label": "Good"}, {"text": "b", "label": "Bad"}]
    from_jsonl = load_classification(write(tmp_path, "d.jsonl", jsonl(rows)), LABELS)
    from_csv = load_classification(write(tmp_path, "d.csv", "text,label\na,Good\nb,Bad\n"), LABELS)
    assert [(e.text, e.label) for e in from_jsonl] == [(e.text, e.label) for e in from_csv] == [("a", "Good"), ("b", "Bad")]


@pytest.mark.parametrize(
    "name, content, line, field, words",
    [
        ("missing.jsonl", jsonl([{"text": "a", "label": "Good"}, {"label": "Bad"}]), 2, "text", "missing"),
        ("unknown.jsonl", jsonl([{"text": "a", "label": "Good"}, {"text": "b", "label": "Excellent"}]), 2, "label", "unknown label"),
        ("unknown.csv", "text,label\na,Good\nb,Great\n", 3, "label", "unknown label"),
        ("nolabel.jsonl", jsonl([{"text": "a"}]), 1, "label", "missing"),
        ("single.jsonl", jsonl([{"text": "a", "label": "Good"}, {"text": "b", "label": "Good"}]), None, "label", "single class"),
        ("broken.jsonl", '{"text": "a", "label": "Good"}\n{"text": \n', 2, None, "invalid JSON"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, name, content, line, field, words):
    path = write(tmp_path, name, content)
    with pytest.raises(DataError) as err:
        load_classification(path, LABELS)
    assert err.value.path == str(path)
    assert err.value.line == line
    assert err.value.field == field
    assert words in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("content", ["", "\n\n", "text,label\n"])
def test_empty_file_is_refused(tmp_path, content):
    suffix = ".csv" if content.startswith("text") else ".jsonl"
    with pytest.raises(DataError, match="empty"):
        load_classification(write(tmp_path, "empty" + suffix, content), LABELS)


def test_non_utf8_names_the_line(tmp_path):
    content = jsonl([{"text": "a", "label": "Good"}]).encode() + b'{"text": "caf\xe9", "label": "Bad"}\n'
    with pytest.raises(DataError) as err:
        load_classification(write(tmp_path, "latin1.jsonl", content), LABELS)
    assert err.value.line == 2 and "UTF-8" in str(err.value)


def test_idp_targets_are_checked_against_the_schema_with_file_and_line(tmp_path):
    cfg = TaskConfig(type="idp")
    good = {
        "doc_type": "receipt",
        "number": "R-1",
        "date": "2024-01-02",
        "vendor": {"name": "A", "country": "DE"},
        "currency": "EUR",
        "items": [{"name": "x", "qty": 1, "price": 2.5}],
        "total": 2.5,
    }
    bad = dict(good, date="02.01.2024")
    path = write(tmp_path, "docs.jsonl", jsonl([{"document": "d1", "target": good}, {"document": "d2", "target": bad}]))
    with pytest.raises(DataError) as caught:
        load_rows(for_config(cfg, ModelSettings()), path)
    assert (caught.value.line, caught.value.field) == (2, "target") and "/date" in caught.value.problem
    [row] = load_rows(for_config(cfg, ModelSettings()), write(tmp_path, "ok.jsonl", jsonl([{"id": "a", "document": "d1", "target": good}])))
    assert row.label.startswith('{"doc_type":"receipt","number":"R-1"')  # re-serialised in schema order, compact
    with pytest.raises(DataError, match="field 'document'"):
        load_rows(for_config(cfg, ModelSettings()), write(tmp_path, "nodoc.jsonl", jsonl([{"target": good}])))
    pool = load_rows(for_config(cfg, ModelSettings()), write(tmp_path, "pool.jsonl", jsonl([{"document": "d1"}])), require_answers=False)
    assert pool[0].label is None
