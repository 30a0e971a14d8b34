"""Reports a person reads: every variant side by side, the confusion image, the extraction field table."""

from core.evaluation.metrics import classification_metrics, extraction_metrics
from core.evaluation.report import (
    add_learning_curves,
    dpo_vs_sft,
    validation_resolution,
    write_classification_report,
    write_extraction_report,
)

LABELS = ["Good", "Standard", "Bad"]


def _variant(pred):
    gold = ["Good", "Standard", "Bad"] * 2
    return classification_metrics(gold, pred, LABELS, confidences=[0.8] * 6, margins=[0.3] * 6, latencies_ms=[5.0] * 6) | {
        "latency_note": "per request"
    }


def test_classification_report_has_every_variant_and_the_confusion_image(tmp_path):
    results = {"base": _variant(["Good"] * 6), "sft": _variant(["Good", "Standard", "Bad"] * 2)}
    report = write_classification_report("t", results, tmp_path)
    text = report.read_text()
    assert "| metric | base | sft |" in text and "| macro_f1 |" in text and "per request" in text
    assert "Balanced evaluation: 2 rows per class." in text
    assert (tmp_path / "confusion.png").stat().st_size > 1000


def test_dpo_against_sft_flags_a_recall_drop_beyond_the_tolerance():
    lines = dpo_vs_sft(_variant(["Good", "Standard", "Bad"] * 2), _variant(["Good", "Good", "Bad"] * 2))
    flagged = [line for line in lines if "FLAG" in line]
    assert len(flagged) == 1 and flagged[0].startswith("| Standard |")


def test_extraction_report_lists_accuracy_per_field(tmp_path):
    m = extraction_metrics([{"a": 1, "b": "x"}], [{"a": 1, "b": "z"}], [True])
    text = write_extraction_report("docs", {"base": m}, tmp_path).read_text()
    assert "| field_f1 |" in text and "| a | 1.000 |" in text and "| b | 0.000 |" in text


def test_a_report_on_unbalanced_rows_says_so_with_the_counts(tmp_path):
    gold = ["Good"] * 4 + ["Standard", "Bad"]
    metrics = classification_metrics(gold, gold, LABELS, latencies_ms=[5.0] * 6)
    text = write_classification_report("t", {"base": metrics}, tmp_path).read_text()
    assert "**The evaluation rows are not balanced** (Good 4, Standard 1, Bad 1;" in text and "Balanced evaluation" not in text


def test_learning_curves_say_what_the_validation_rows_could_decide(tmp_path):
    """A curve that knows its validation rows states the kept score's 95% scale and the steps within it: on 75 rows a
    0.55 is +/-0.11, so steps 0.03 and 0.10 below it are as good there; 0.30 below is not."""
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    curve = [{"step": s, "value": v} for s, v in ((50, 0.25), (100, 0.45), (150, 0.55), (200, 0.52))]
    add_learning_curves(report, {"sft": {"metric": "macro_f1", "curve": curve, "rows": 75}, "kd": {"metric": "macro_f1", "curve": curve}})
    sft_line, kd_line = [line for line in report.read_text().splitlines() if line.startswith("- ")]
    assert "kept step 150 (0.550); on 75 validation rows +/-0.11 (95%): steps 100, 200 are as good on these rows" in sft_line
    assert round(validation_resolution(0.55, 75), 3) == 0.113
    assert kd_line.endswith("kept step 150 (0.550)")  # a curve without its row count (an older adapter) says no more
    assert validation_resolution(1.0, 20) > 0  # a perfect score on few rows is not certain either
