"""The extraction kind: targets checked against the schema, the endpoint held to it, valid-but-wrong answers for DPO."""

import json
import random

import pytest

from core.common.config import TaskConfig
from core.errors import SchemaError
from core.kinds import for_config
from core.kinds.data import labeled_rows, load_rows
from core.kinds.extraction import perturbed, task_schema
from core.settings import ModelSettings


def test_demo_documents_round_trip_with_targets_in_schema_order(tmp_path):
    cfg = TaskConfig(type="idp")
    cfg.data.demo.n_rows = 30
    rows, _ = labeled_rows(for_config(cfg, ModelSettings()))
    from core.common.files import write_jsonl

    write_jsonl(tmp_path / "docs.jsonl", [for_config(cfg, ModelSettings()).to_record(r) for r in rows])
    assert load_rows(for_config(cfg, ModelSettings()), tmp_path / "docs.jsonl") == rows
    assert list(json.loads(rows[0].label))[:3] == ["doc_type", "number", "date"]


def test_an_unusable_schema_file_stops_the_task_naming_the_pointer(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "strng"}}}))
    cfg = TaskConfig(type="idp", schema_file=path)
    with pytest.raises(SchemaError, match="/properties/a/type"):
        for_config(cfg, ModelSettings()).check_task()


def test_the_endpoint_is_held_to_the_schema_and_invalid_replies_fail():
    cfg = TaskConfig(type="idp")
    teaching = for_config(cfg, ModelSettings()).teacher_task()
    assert teaching.request()["response_format"]["json_schema"]["schema"] == task_schema(cfg, ModelSettings()).schema
    assert teaching.read_reply('{"doc_type": "memo"}', [], 0.2, 50, 5).error.startswith("answer does not validate")
    assert teaching.read_reply("not json", [], 0.2, 50, 5).output is None


def test_a_perturbed_gold_target_still_validates_and_differs():
    cfg = TaskConfig(type="idp")
    cfg.data.demo.n_rows = 30
    schema = task_schema(cfg, ModelSettings())
    rows, _ = labeled_rows(for_config(cfg, ModelSettings()))
    gold = json.loads(rows[0].label)
    wrong = perturbed(gold, schema, random.Random(0))
    assert wrong != gold and not schema.errors(wrong)
