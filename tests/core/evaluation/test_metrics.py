"""Evaluation metrics on hand-made predictions: every figure checked against a value worked out by hand."""

import pytest

from core.evaluation.metrics import classification_metrics, expected_calibration_error, extraction_metrics, field_diff, flatten

LABELS = ["Good", "Standard", "Bad"]


def test_classification_metrics_count_none_as_wrong_and_balance_by_class():
    gold = ["Good", "Good", "Standard", "Standard", "Bad", "Bad"]
    pred = ["Good", "Standard", "Standard", "Standard", "Bad", None]
    m = classification_metrics(gold, pred, LABELS, confidences=[0.9] * 6, latencies_ms=[10, 20, 30, 40, 50, 60])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["Good"]["recall"] == 0.5 and m["per_class"]["Standard"]["precision"] == pytest.approx(2 / 3)
    assert m["min_class_recall"] == 0.5 and m["predicted_distribution"]["<none>"] == 1
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert m["ece"] == pytest.approx(abs(4 / 6 - 0.9))
    assert m["latency_ms_p50"] == pytest.approx(35.0)


def test_ece_is_zero_when_confidence_matches_accuracy():
    assert expected_calibration_error([0.75] * 4, [True, True, True, False]) == pytest.approx(0.0)
    assert expected_calibration_error([], []) == 0.0


def test_field_level_comparison_normalises_numbers_dates_and_strings():
    gold = {"vendor": {"name": "Acme Ltd"}, "total": 10.0, "date": "2024-01-02", "items": [{"qty": 1}]}
    pred = {"vendor": {"name": " acme ltd "}, "total": 10.001, "date": "2024-01-03", "extra": 1}
    assert set(flatten(gold)) == {"vendor.name", "total", "date", "items[0].qty"}
    diff = field_diff(gold, pred)
    assert (diff["correct"], diff["wrong"], diff["missing"], diff["extra"]) == (2, 1, 1, 1)


def test_extraction_metrics_score_invalid_outputs_as_all_missing():
    gold = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    m = extraction_metrics(gold, [{"a": 1, "b": "x"}, None], [True, False])
    assert m["schema_valid_rate"] == 0.5 and m["exact_match"] == 0.5
    assert m["field_recall"] == pytest.approx(0.5) and m["field_precision"] == pytest.approx(1.0)
    assert m["corrections_per_doc"] == pytest.approx(1.0)


def test_the_confidence_threshold_is_the_lowest_that_keeps_the_precision():
    from core.evaluation.metrics import confidence_threshold

    confidences, correct = [0.95, 0.9, 0.8, 0.7, 0.6, 0.5], [True, True, False, True, True, False]
    loose = confidence_threshold(confidences, correct, 0.75)
    assert loose["threshold"] == 0.6 and loose["precision"] == 0.8 and loose["kept_share"] == pytest.approx(5 / 6)
    strict = confidence_threshold(confidences, correct, 0.95)
    assert strict["threshold"] == 0.9 and strict["precision"] == 1.0
    assert confidence_threshold([0.9, 0.8], [False, False], 0.5)["threshold"] is None  # nothing reaches it: nothing kept
    assert confidence_threshold([], [], 0.5)["threshold"] is None
