"""prepare_data and the checks before it (rows, splits, the pool, egress), against a real (temporary) Prefect server."""

import json
from pathlib import Path

import pytest

from core.errors import DataError
from core.kinds.data import VALIDATION_PER_CLASS
from core.settings import ModelSettings
from tasks.prepare import prepare_data


def test_prepare_data_writes_balanced_splits_and_fingerprints(prefect_server, tiny_cfg):
    prepared = prepare_data(tiny_cfg)
    train = [json.loads(line) for line in Path(prepared["train"]).read_text().splitlines()]
    eval_rows = [json.loads(line) for line in Path(prepared["eval"]).read_text().splitlines()]
    assert len(train) == 3 * 8 and len(eval_rows) == 3 * 4
    assert prepared["fingerprint"]["n_train"] == 24 and len(prepared["fingerprint"]["train_sha256"]) == 64
    assert prepare_data(tiny_cfg)["fingerprint"] == prepared["fingerprint"]  # seeded: the same rows again
    assert prepared["fingerprint"]["n_validation"] == 0  # by default every labeled row trains (no step picked on ~20 a class)
    tiny_cfg.methods = ["sft", "selftrain"]  # self-training picks its threshold on rows its labeler never trained on
    prepared = prepare_data(tiny_cfg)
    train = [json.loads(line) for line in Path(prepared["train"]).read_text().splitlines()]
    validation = [json.loads(line) for line in Path(prepared["validation"]).read_text().splitlines()]
    assert len(validation) == 3 * VALIDATION_PER_CLASS
    assert not {r["text"] for r in validation} & ({r["text"] for r in train} | {r["text"] for r in eval_rows})


def test_a_small_or_rare_class_gives_validation_a_quarter_of_its_rows_at_most(prefect_server, tiny_cfg, tmp_path):
    """60 rows (20 a class): evaluation takes a fifth of each class (4), validation at most a quarter of the 16 left (4),
    not the 20 asked; 12 a class train. The file is used, not refused."""
    rows = tmp_path / "few.jsonl"
    rows.write_text("".join(json.dumps({"text": f"t{i}", "label": ["Good", "Standard", "Bad"][i % 3]}) + "\n" for i in range(60)))
    tiny_cfg.data.train, tiny_cfg.data.train_per_class, tiny_cfg.training.validation_per_class = rows, 12, 20
    prepared = prepare_data(tiny_cfg)
    assert prepared["fingerprint"]["n_validation"] == 3 * 4
    train = {json.loads(line)["text"] for line in Path(prepared["train"]).read_text().splitlines()}
    assert len(train) == 3 * 12
    tiny_cfg.training.validation_per_class = 0  # no validation split at all
    assert prepare_data(tiny_cfg)["fingerprint"]["n_validation"] == 0


def test_prepare_data_refuses_bad_rows_before_anything_runs(prefect_server, tiny_cfg, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "Good"}\n{"text": "b", "label": "Great"}\n')
    tiny_cfg.data.train = bad
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'label': unknown label 'Great'"):
        prepare_data(tiny_cfg)


def test_the_pool_loses_repeats_and_held_out_inputs_and_the_counts_are_returned(prefect_server, tiny_cfg, tmp_path):
    prepared = prepare_data(tiny_cfg)
    eval_text = json.loads(Path(prepared["eval"]).read_text().splitlines()[0])["text"]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["fresh 1", "fresh 2", "fresh 1", eval_text]))
    tiny_cfg.data.unlabeled, tiny_cfg.methods = pool, ["sft", "selftrain"]
    prepared = prepare_data(tiny_cfg)
    assert prepared["pool"] == {"rows": 4, "kept": 2, "duplicates_dropped": 1, "held_out_inputs_dropped": 1}
    assert [json.loads(line)["text"] for line in Path(prepared["unlabeled"]).read_text().splitlines()] == ["fresh 1", "fresh 2"]


def test_the_form_cannot_send_a_key_to_a_host_or_from_a_variable_the_operator_did_not_allow(tiny_cfg, monkeypatch):
    from core.errors import ConfigError
    from tasks.prepare import check_egress

    leak = tiny_cfg.model_copy(
        update={"teacher": tiny_cfg.teacher.model_copy(update={"backend": "openai", "base_url": "https://evil.example/v1"})}
    )
    with pytest.raises(ConfigError, match="teacher.base_url: host 'evil.example'.*DISTILL_SLM_HOSTS_ALLOWED"):
        check_egress(leak, ModelSettings())
    secret = tiny_cfg.model_copy(
        update={"teacher": tiny_cfg.teacher.model_copy(update={"backend": "openai", "api_key_env": "AWS_SECRET_ACCESS_KEY"})}
    )
    with pytest.raises(ConfigError, match="teacher.api_key_env: 'AWS_SECRET_ACCESS_KEY'.*DISTILL_SLM_SECRET_ENV_ALLOWED"):
        check_egress(secret, ModelSettings())
    service = tiny_cfg.model_copy(update={"service": tiny_cfg.service.model_copy(update={"url": "http://10.0.0.9:8000"})})
    with pytest.raises(ConfigError, match="service.url: host '10.0.0.9'"):
        check_egress(service, ModelSettings())
    monkeypatch.setenv("DISTILL_SLM_HOSTS_ALLOWED", '["*.example", "10.0.0.9"]')  # the operator allows them
    check_egress(leak, ModelSettings())
    check_egress(service, ModelSettings())
