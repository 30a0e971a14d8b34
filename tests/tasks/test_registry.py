"""register and promote through the gate, against a real (temporary) Prefect server."""

import json

from core.registry import Registry
from tasks.prepare import prepare_data
from tasks.registry import promote_task, register_task
from tests.conftest import make_adapter


def test_register_then_promote_through_the_gate(prefect_server, tiny_cfg, tmp_path):
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    metrics = {"macro_f1": 0.8, "accuracy": 0.8, "min_class_recall": 0.6, "ece": 0.1, "predictions": []}
    (eval_dir / "sft.metrics.json").write_text(json.dumps(metrics))
    (eval_dir / "base.metrics.json").write_text(json.dumps(metrics | {"macro_f1": 0.2}))
    adapter = make_adapter(tiny_cfg, tmp_path / "adapter", seed=1)
    ref = register_task(tiny_cfg, "sft", str(adapter), str(eval_dir), {"n_train": 1})
    assert ref == "sft/v0001"
    card = (tiny_cfg.runs_dir / tiny_cfg.name / "sft" / "v0001" / "README.md").read_text()
    assert "| macro_f1 | 0.800 | 0.200 |" in card
    from huggingface_hub import ModelCard

    meta = ModelCard(card).data  # the Hugging Face model-card convention: the folder can be published as it is
    assert meta.library_name == "peft" and meta.base_model == str(tiny_cfg.model.base_model) and meta.license == "other"
    assert {"distill-slm", "lora", "classification", "sft"} <= set(meta.tags)
    assert {(r.metric_type, r.metric_value) for r in meta.eval_results} >= {("macro_f1", 0.8), ("min_class_recall", 0.6)}
    assert promote_task(tiny_cfg, [ref])[ref]["promoted"] and Registry(tiny_cfg.runs_dir).aliases(tiny_cfg.name)["production"] == ref


def test_promote_evaluates_an_incumbent_scored_on_other_rows_on_the_candidates_rows(prefect_server, tiny_cfg, tmp_path):
    tiny_cfg.promotion.guard_min = {}
    prepared = prepare_data(tiny_cfg)
    registry = Registry(tiny_cfg.runs_dir)
    for seed, rows in ((1, "other-rows"), (2, prepared["fingerprint"]["eval_sha256"])):
        adapter = make_adapter(tiny_cfg, tmp_path / f"adapter{seed}", seed=seed)
        registry.register(tiny_cfg.name, "sft", adapter, {"macro_f1": 0.99 if seed == 1 else 0.0}, "", {"eval_sha256": rows})
    registry.promote(tiny_cfg.name, "sft/v0001")
    decision = promote_task(tiny_cfg, ["sft/v0002"], prepared["eval"])["sft/v0002"]
    assert decision["incumbent_reevaluated"] and decision["eval_sha256"] == prepared["fingerprint"]["eval_sha256"]
    assert decision["incumbent_value"] != 0.99  # measured again on these rows, not the stored figure
