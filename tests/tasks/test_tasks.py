"""The Prefect tasks, each run on its own against a real (temporary) Prefect server."""

import json
from pathlib import Path

import pytest

from core.errors import DataError
from core.methods import kd, run_dir
from core.registry import Registry
from tasks.prepare import prepare_data
from tasks.registry import promote_task, register_task
from tests.conftest import make_adapter


def test_prepare_data_writes_balanced_splits_and_fingerprints(prefect_server, tiny_cfg):
    prepared = prepare_data(tiny_cfg)
    train = [json.loads(line) for line in Path(prepared["train"]).read_text().splitlines()]
    eval_rows = [json.loads(line) for line in Path(prepared["eval"]).read_text().splitlines()]
    assert len(train) == 3 * 8 and len(eval_rows) == 3 * 4
    assert prepared["fingerprint"]["n_train"] == 24 and len(prepared["fingerprint"]["train_sha256"]) == 64
    assert prepare_data(tiny_cfg)["fingerprint"] == prepared["fingerprint"]  # seeded: the same rows again
    validation = [json.loads(line) for line in Path(prepared["validation"]).read_text().splitlines()]
    assert len(validation) == 3 * tiny_cfg.training.validation_per_class
    assert not {r["text"] for r in validation} & ({r["text"] for r in train} | {r["text"] for r in eval_rows})


def test_too_few_rows_per_class_for_a_validation_split_say_how_many_are_needed(prefect_server, tiny_cfg, tmp_path):
    rows = tmp_path / "few.jsonl"
    rows.write_text("".join(json.dumps({"text": f"t{i}", "label": ["Good", "Standard", "Bad"][i % 3]}) + "\n" for i in range(60)))
    tiny_cfg.data.train = rows
    with pytest.raises(DataError, match=r"hold out 20 per class: .*each class needs at least 40"):
        prepare_data(tiny_cfg)
    tiny_cfg.training.validation_per_class = 0  # the way out the message's setting names
    assert prepare_data(tiny_cfg)["fingerprint"]["n_validation"] == 0


def test_prepare_data_refuses_bad_rows_before_anything_runs(prefect_server, tiny_cfg, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "Good"}\n{"text": "b", "label": "Great"}\n')
    tiny_cfg.data.train = bad
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'label': unknown label 'Great'"):
        prepare_data(tiny_cfg)


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


def test_a_run_folder_depends_on_data_and_settings_only(tiny_cfg):
    first = run_dir(tiny_cfg, "sft", {"train_sha256": "x"})
    assert run_dir(tiny_cfg, "sft", {"train_sha256": "x"}) == first
    tiny_cfg.training.learning_rate = 1e-4
    assert run_dir(tiny_cfg, "sft", {"train_sha256": "x"}) != first


def test_any_label_set_the_tokenizer_tells_apart_passes_the_kd_check(tiny_cfg):
    """'Bug' begins 'Bugfix', P1/P2/P3 share "P": the KD term scores whole label sequences, so both are fine."""
    from core.kinds import kind_of

    tiny_cfg.methods = ["sft", "kd"]
    for labels in (["Bug", "Bugfix"], ["P1", "P2", "P3"], ["approve", "review-manual", "review-legal"]):
        tiny_cfg.labels = labels
        assert kind_of(tiny_cfg).check_task(tiny_cfg) == []


def test_the_pool_loses_repeats_and_held_out_inputs_and_the_counts_are_returned(prefect_server, tiny_cfg, tmp_path):
    prepared = prepare_data(tiny_cfg)
    eval_text = json.loads(Path(prepared["eval"]).read_text().splitlines()[0])["text"]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["fresh 1", "fresh 2", "fresh 1", eval_text]))
    tiny_cfg.data.unlabeled, tiny_cfg.methods = pool, ["sft", "selftrain"]
    prepared = prepare_data(tiny_cfg)
    assert prepared["pool"] == {"rows": 4, "kept": 2, "duplicates_dropped": 1, "held_out_inputs_dropped": 1}
    assert [json.loads(line)["text"] for line in Path(prepared["unlabeled"]).read_text().splitlines()] == ["fresh 1", "fresh 2"]


def test_artifact_keys_are_made_safe_from_any_valid_task_name():
    from tasks.artifacts import artifact_key

    assert artifact_key("Creditmix_KD.v2", "teacher", "unlabeled") == "creditmix-kd-v2-teacher-unlabeled"


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


def test_kd_never_reuses_a_student_trained_on_another_teacher_or_other_answers(tiny_cfg):
    traces = [{"input_sha256": "a", "output": "Good", "label_probs": {"Good": 0.9, "Bad": 0.1}, "teacher": "openai:big"}]
    fingerprint = {"train_sha256": "rows"}
    first = kd.run_folder(tiny_cfg, traces, fingerprint)
    assert kd.run_folder(tiny_cfg, [dict(traces[0])], fingerprint) == first  # the same teacher and answers: resumed
    other_teacher = tiny_cfg.model_copy(update={"teacher": tiny_cfg.teacher.model_copy(update={"model": "another-model"})})
    assert kd.run_folder(other_teacher, traces, fingerprint) != first
    other_answers = [traces[0] | {"label_probs": {"Good": 0.4, "Bad": 0.6}}]  # same inputs, the teacher now thinks otherwise
    assert kd.run_folder(tiny_cfg, other_answers, fingerprint) != first


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "../runs", "a\\b", ""])
def test_a_task_name_is_one_folder_name(name):
    from pydantic import ValidationError

    from core.common.config import TaskConfig

    with pytest.raises(ValidationError, match="name"):
        TaskConfig(name=name)


def test_the_form_cannot_send_a_key_to_a_host_or_from_a_variable_the_operator_did_not_allow(tiny_cfg, monkeypatch):
    from core.errors import ConfigError
    from tasks.prepare import check_egress

    leak = tiny_cfg.model_copy(
        update={"teacher": tiny_cfg.teacher.model_copy(update={"backend": "openai", "base_url": "https://evil.example/v1"})}
    )
    with pytest.raises(ConfigError, match="teacher.base_url: host 'evil.example'.*DISTILL_SLM_HOSTS_ALLOWED"):
        check_egress(leak)
    secret = tiny_cfg.model_copy(
        update={"teacher": tiny_cfg.teacher.model_copy(update={"backend": "openai", "api_key_env": "AWS_SECRET_ACCESS_KEY"})}
    )
    with pytest.raises(ConfigError, match="teacher.api_key_env: 'AWS_SECRET_ACCESS_KEY'.*DISTILL_SLM_SECRET_ENV_ALLOWED"):
        check_egress(secret)
    service = tiny_cfg.model_copy(update={"service": tiny_cfg.service.model_copy(update={"url": "http://10.0.0.9:8000"})})
    with pytest.raises(ConfigError, match="service.url: host '10.0.0.9'"):
        check_egress(service)
    monkeypatch.setenv("DISTILL_SLM_HOSTS_ALLOWED", '["*.example", "10.0.0.9"]')  # the operator allows them
    check_egress(leak)
    check_egress(service)
