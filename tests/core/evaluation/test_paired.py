"""The paired comparison the gate reads: a lead over SFT is clear only when it survives resampling the rows."""

import json

import numpy as np

from core.common.config import TaskConfig
from core.common.rows import Example
from core.evaluation.metrics import classification_metrics, extraction_metrics, resampled_field_f1, resampled_macro_f1
from core.evaluation.paired import paired_gains, paired_note, within_noise
from core.kinds import for_config
from core.settings import ModelSettings

LABELS = ["approve", "review-manual", "review-legal"]


def _kind(tmp_path, **extra):
    cfg = TaskConfig.model_validate(
        {"name": "t", "type": "classification", "labels": LABELS, "data": {"train": str(tmp_path / "x.jsonl")}} | extra
    )
    return for_config(cfg, ModelSettings())


def _scored(gold: list[str], predicted: list[str]) -> dict:
    metrics = classification_metrics(gold, predicted, LABELS)
    metrics["predictions"] = [{"id": str(i), "gold": g, "pred": p} for i, (g, p) in enumerate(zip(gold, predicted))]
    return metrics


def test_the_resampled_metrics_equal_the_reported_ones_on_the_rows_themselves():
    rng = np.random.default_rng(1)
    gold = list(rng.choice(LABELS, 90))
    predicted = [g if rng.random() < 0.7 else str(rng.choice(LABELS)) for g in gold]
    whole = np.arange(len(gold))[None, :]
    assert resampled_macro_f1(gold, predicted, LABELS, whole)[0] == classification_metrics(gold, predicted, LABELS)["macro_f1"]
    docs = [{"a": 1, "b": {"c": "x", "d": [1, 2]}}, {"a": 2, "b": {"c": "y", "d": []}}, {"a": 3, "b": {"c": "z", "d": [5]}}]
    outputs = [{"a": 1, "b": {"c": "x", "d": [1]}}, None, {"a": 4, "b": {"c": "z", "d": [5]}, "e": 1}]
    expected = extraction_metrics(docs, outputs, [True, False, True])["field_f1"]
    assert abs(resampled_field_f1(docs, outputs, np.arange(3)[None, :])[0] - expected) < 1e-12


def test_a_small_lead_on_a_small_split_is_within_noise_and_a_large_one_is_clear(tmp_path):
    kind = _kind(tmp_path)
    rng = np.random.default_rng(0)
    gold = [LABELS[i % 3] for i in range(60)]
    rows = [Example(id=str(i), text=f"row {i}", label=g) for i, g in enumerate(gold)]
    sft = [g if rng.random() < 0.70 else LABELS[(LABELS.index(g) + 1) % 3] for g in gold]
    # one more row right than SFT: a lead of a point or two, well inside what 60 rows can tell
    nudged = list(sft)
    nudged[next(i for i, (g, p) in enumerate(zip(gold, sft)) if g != p)] = gold[
        next(i for i, (g, p) in enumerate(zip(gold, sft)) if g != p)
    ]
    perfect = list(gold)
    results = {"sft": _scored(gold, sft), "selftrain": _scored(gold, nudged), "kd": _scored(gold, perfect), "base": _scored(gold, sft)}
    paired_gains(kind, rows, results, ["sft", "selftrain", "kd"])
    assert "paired" not in results["sft"] and "paired" not in results["base"]
    small, large = results["selftrain"]["paired"], results["kd"]["paired"]
    assert small["gain"] > 0 and small["interval"][0] <= 0 < small["interval"][1] and within_noise(results["selftrain"])
    assert large["interval"][0] > 0.1 and not within_noise(results["kd"])
    assert "within the draw of the rows" in paired_note("selftrain", results["selftrain"])
    again = {name: dict(m) for name, m in results.items()}
    paired_gains(kind, rows, again, ["sft", "selftrain", "kd"])
    assert again["selftrain"]["paired"] == small  # seeded: the same rows give the same interval


def test_no_comparison_without_sft_or_for_a_metric_the_kind_cannot_resample(tmp_path):
    gold = [LABELS[i % 3] for i in range(12)]
    rows = [Example(id=str(i), text=f"row {i}", label=g) for i, g in enumerate(gold)]
    results = {"selftrain": _scored(gold, gold), "kd": _scored(gold, gold)}
    paired_gains(_kind(tmp_path), rows, results, ["selftrain", "kd"])
    assert not any("paired" in m for m in results.values()) and not within_noise(results["kd"])
    results = {"sft": _scored(gold, gold), "kd": _scored(gold, gold)}
    paired_gains(_kind(tmp_path, promotion={"primary_metric": "accuracy"}), rows, results, ["sft", "kd"])
    assert "paired" not in results["kd"]


def test_extraction_compares_field_f1_per_document(tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}))
    cfg = TaskConfig.model_validate({"name": "x", "type": "idp", "schema_file": str(schema), "data": {"train": str(tmp_path / "x.jsonl")}})
    kind = for_config(cfg, ModelSettings())
    rows = [Example(id=str(i), text=f"doc {i}", label=json.dumps({"a": i})) for i in range(40)]
    right = {"field_f1": 1.0, "predictions": [{"output": {"a": i}} for i in range(40)]}
    wrong = {"field_f1": 0.0, "predictions": [{"output": {"a": -1}} for _ in range(40)]}
    results = {"sft": wrong, "kd": right}
    paired_gains(kind, rows, results, ["sft", "kd"])
    assert results["kd"]["paired"]["gain"] == 1.0 and results["kd"]["paired"]["interval"] == [1.0, 1.0]
