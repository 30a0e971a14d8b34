"""The scorecard: variants scored on the same rows with their cost, the teacher and the cascade beside them, the
metrics an adapter is registered with, the report written."""

import json

import pytest

from core.common.rows import Example, text_sha256
from core.kinds import for_config
from core.scorecard import evaluate_run, registered_metrics, score_variants
from core.settings import ModelSettings
from tests.conftest import make_adapter


def rows() -> list[Example]:
    return [Example(f"r{i}", f"Interest_Rate: {i}", label) for i, label in enumerate(["Good", "Standard", "Bad", "Good", "Bad", "Bad"])]


def test_the_teacher_and_the_cascade_join_the_variants_each_with_its_cost(tiny_cfg, tmp_path):
    adapter = make_adapter(tiny_cfg, tmp_path / "sft", seed=1)
    # A teacher right on every row but the last, sure of itself on all of them.
    traces = {
        text_sha256(r.text): {
            "output": r.label if i < 5 else "Good",
            "label_probs": {label: (0.9 if label == (r.label if i < 5 else "Good") else 0.05) for label in tiny_cfg.labels},
            "latency_s": 0.5,
            "prompt_tokens": 40,
            "completion_tokens": 2,
            "teacher": "openai:big",
        }
        for i, r in enumerate(rows())
    }
    results = score_variants(for_config(tiny_cfg, ModelSettings()), rows(), {"sft": adapter}, teacher_traces=traces)
    assert list(results) == ["base", "teacher", "sft"]
    assert results["teacher"]["accuracy"] == pytest.approx(5 / 6)
    for metrics in results.values():
        assert metrics["cost_per_1k_usd"] > 0 and metrics["tokens_per_request"] > 0
    cascade = results["sft"]["cascade"]
    # A row escalates when the student's confidence is under the threshold: every row at the top threshold (the
    # cascade then answers as the teacher does), and the cost grows with the share escalated.
    assert cascade[-1]["escalation_rate"] == 1.0 and cascade[-1]["accuracy"] == pytest.approx(results["teacher"]["accuracy"])
    tiny_cfg.escalation.report_thresholds = [0.0]  # no confidence is under 0: the student answers every row
    [alone] = score_variants(for_config(tiny_cfg, ModelSettings()), rows(), {"sft": adapter}, teacher_traces=traces)["sft"]["cascade"]
    assert alone["escalation_rate"] == 0.0 and alone["accuracy"] == pytest.approx(results["sft"]["accuracy"])
    assert cascade[-1]["cost_per_1k_usd"] > alone["cost_per_1k_usd"]
    assert "cascade" not in results["base"]


def test_a_run_writes_each_variants_metrics_and_registers_them_without_predictions(tiny_cfg, tmp_path):
    adapter = make_adapter(tiny_cfg, tmp_path / "sft", seed=2)
    (adapter / "train_stats.json").write_text(json.dumps({"distinct_rows": 123}))
    card = evaluate_run(for_config(tiny_cfg, ModelSettings()), rows(), {"sft": adapter}, tmp_path / "eval")
    assert card.results["sft"]["training_rows"] == 123 and card.report.exists()
    assert json.loads((tmp_path / "eval" / "sft.metrics.json").read_text())["n"] == 6
    metrics, baseline = registered_metrics(tmp_path / "eval", "sft")
    assert "predictions" not in metrics and metrics["baseline"]["n"] == 6 and baseline["accuracy"] == card.results["base"]["accuracy"]
    assert "teacher_agreement" not in metrics  # no teacher was scored on these rows
