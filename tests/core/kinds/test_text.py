"""Free-text answers (`type: text`): rows checked naming file, line and field; chrF as the metric; the embedded base
model answers and is scored; DPO pairs put the reference against the student's own different reply."""

import json

import pytest

from core.common.config import TaskConfig
from core.errors import DataError
from core.evaluation.metrics import chrf, text_metrics
from core.kinds import for_config
from core.kinds.data import load_rows
from core.model.loading import load_model
from core.settings import ModelSettings


def _kind(tmp_path, base_model: str = "embedded", **extra):
    cfg = TaskConfig.model_validate(
        {"name": "replies", "type": "text", "model": {"base_model": base_model}, "data": {"train": str(tmp_path / "train.jsonl")}} | extra
    )
    return for_config(cfg, ModelSettings())


@pytest.mark.parametrize(
    ("record", "field", "problem"),
    [
        ({"answer": "hi"}, "text", "missing or empty"),
        ({"text": "  ", "answer": "hi"}, "text", "missing or empty"),
        ({"text": "hello"}, "answer", "missing"),
        ({"text": "hello", "answer": ["a"]}, "answer", "must be a non-empty string"),
        ({"text": "hello", "answer": " "}, "answer", "must be a non-empty string"),
    ],
)
def test_bad_rows_stop_the_read_naming_file_line_and_field(tmp_path, record, field, problem):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"text": "fine", "answer": "ok"}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError) as err:
        load_rows(_kind(tmp_path), path)
    assert (err.value.line, err.value.field) == (2, field) and problem in str(err.value)


def test_chrf_gives_part_credit_for_shared_wording_and_none_for_nothing():
    assert chrf("SELECT name FROM users", "SELECT name FROM users") == 1.0
    close, far = chrf("SELECT name FROM user", "SELECT name FROM users"), chrf("the weather is nice", "SELECT name FROM users")
    assert 0.8 < close < 1.0 and far < 0.3 and chrf("", "SELECT") == 0.0
    m = text_metrics(["Paris.", "Four"], ["Paris.", "4"])
    assert m["exact_match"] == 0.5 and m["chrf_per_row"][0] == 1.0 and m["chrf"] == pytest.approx(sum(m["chrf_per_row"]) / 2, abs=1e-4)


def test_the_embedded_model_answers_and_is_scored_against_the_references(tmp_path):
    kind = _kind(tmp_path, max_new_tokens=12, instruction="Answer in one short sentence.")
    path = tmp_path / "train.jsonl"
    rows = [
        {"text": "What is the capital of France?", "answer": "The capital of France is Paris."},
        {"text": "Say hello.", "answer": "Hello!"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = load_rows(kind, path)
    model, tokenizer = load_model(kind.cfg.model, kind.settings)
    metrics = kind.score(kind.decoder(model, tokenizer), examples)
    assert metrics["n"] == 2 and 0.0 < metrics["chrf"] <= 1.0  # a real model writes something that shares characters
    assert [p["id"] for p in metrics["predictions"]] == ["train-1", "train-2"] and all(p["output"] for p in metrics["predictions"])
    assert "Paris" in metrics["predictions"][0]["output"]  # SmolLM2-135M-Instruct knows this one
    pairs, counts = kind.preference_pairs(examples, kind.decoder(model, tokenizer), None)
    assert counts["student_differs"] == len(pairs) and all(p.chosen != p.rejected for p in pairs)
    report = kind.write_report({"base": metrics}, tmp_path)
    assert "| chrf |" in report.read_text() and "Paris" in report.read_text()


def test_drift_reads_reply_lengths_and_agreement_in_wording(tmp_path):
    kind = _kind(tmp_path)
    delivery = "Your parcel left our warehouse on Monday and should arrive by Friday."
    view = kind.drift_view({"output": delivery})
    assert kind.agrees(view, "Your package left the warehouse Monday; it should arrive on Friday.")  # reworded: chrF 0.56
    assert not kind.agrees(view, "We have refunded the full amount to your card.")  # another reply: 0.19
    sql = kind.drift_view({"output": "SELECT name FROM users WHERE age > 30"})
    assert kind.agrees(sql, "SELECT name FROM users WHERE age>30;") and not kind.agrees(sql, "SELECT count(*) FROM orders")
    assert kind.drift_view({"output": None}) is None
    reference = [kind.drift_view({"output": "x" * (40 + i)}) for i in range(40)]
    rambling = [kind.drift_view({"output": "x" * (400 + i)}) for i in range(40)]
    same, moved = kind.output_signals(reference, reference[::-1])[0], kind.output_signals(reference, rambling)[0]
    assert moved.name == "output.reply_length" and moved.p_value < 0.001 < same.p_value and moved.detail["window"] > 400
