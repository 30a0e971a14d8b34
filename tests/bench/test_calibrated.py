"""bench calibrated's comparison on the tiny model: generate-and-parse beside the calibrated decoder on the same rows."""

import pytest

from bench.calibrated import compare, eval_rows
from core.model.loading import load_model
from core.settings import ModelSettings


def test_the_eval_rows_are_balanced_and_come_from_the_demo():
    rows = eval_rows(per_class=2)
    assert sorted(r.label for r in rows) == ["Bad", "Bad", "Good", "Good", "Standard", "Standard"]


def test_both_sides_answer_every_row_and_the_figures_are_theirs(tiny_cfg):
    rows = eval_rows(per_class=2)
    model, tokenizer = load_model(tiny_cfg.model, ModelSettings())
    figures = compare(tiny_cfg, model, tokenizer, rows)
    assert figures["n_requests"] == 6
    for side in ("predicted_labels_calibrated", "predicted_labels_uncalibrated", "predicted_labels_generate"):
        assert sum(figures[side].values()) == 6
    assert set(figures["predicted_labels_calibrated"]) <= {"Good", "Standard", "Bad"}
    assert sum(figures["calibration_prior"].values()) == pytest.approx(1.0, abs=1e-3)
    assert figures["latency_ratio_calibrated_over_generate"] > 0 and figures["matmul_gflop_per_s"] > 0
    assert all(0 < share for share in figures["flop_rate_share_of_matmul"].values())
