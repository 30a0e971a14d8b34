"""A task kind is one module plus one registration line: a throw-away toy kind, registered with `register(Echo)`,
runs through config validation, data loading, splitting, scoring and the model card with no other edit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.common.config import TYPE_DEFAULTS, TaskConfig
from core.common.rows import Example
from core.errors import ConfigError, DataError
from core.evaluation.evaluate import score_variant
from core.kinds import KINDS, TaskKind, for_config, register
from core.kinds.data import labeled_rows, load_rows, split
from core.settings import ModelSettings


class Echo(TaskKind):
    """Toy task type: the answer is the input's first word (scored by exact match, no model). It implements the four
    methods every kind must, plus its file format; no teacher, no drift signals (those parts say so when called)."""

    type = "echo"
    summary_keys = ("exact_match",)
    card_keys = ("exact_match",)
    defaults = {"instruction": "Repeat the first word."}

    def parse_records(self, records, path: Path, require_answers: bool) -> list[Example]:
        for line, record in records:
            if not isinstance(record.get("text"), str):
                raise DataError(path, line, "text", "missing")
        return [Example(str(record.get("id") or line), record["text"], record.get("word")) for line, record in records]

    def to_record(self, row):
        return {"id": row.id, "text": row.text, "word": row.label}

    def decoder(self, model, tokenizer, adapter=None):
        return lambda text: text.split()[0]

    def score(self, decoder, rows):
        hits = [decoder(r.text) == r.label for r in rows]
        return {"exact_match": sum(hits) / len(hits), "n": len(rows)}

    def write_report(self, results, out_dir):
        (out_dir / "report.md").write_text(json.dumps(results))
        return out_dir / "report.md"


@pytest.fixture
def echo():
    register(Echo)
    yield
    del KINDS["echo"], TYPE_DEFAULTS["echo"]


def test_an_unregistered_type_is_refused_naming_the_field(tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text("name: t\ntype: echo\n")
    with pytest.raises(ConfigError, match=r"field type: .*unknown task type 'echo'"):
        TaskConfig.from_yaml(path)


def test_a_registered_toy_kind_runs_through_the_generic_code(echo, tmp_path):
    data = tmp_path / "echo.jsonl"
    data.write_text("".join(json.dumps({"text": f"w{i} and more", "word": f"w{i}"}) + "\n" for i in range(10)))
    (tmp_path / "task.yaml").write_text(
        f"name: echo-task\ntype: echo\ndata: {{train: {data.name}, train_per_class: 6, eval_per_class: 4}}\n"
    )
    cfg = TaskConfig.from_yaml(tmp_path / "task.yaml")
    kind = for_config(cfg, ModelSettings())
    assert isinstance(kind, Echo) and cfg.instruction == "Repeat the first word."
    rows, source = labeled_rows(kind)
    train, eval_rows = split(kind, rows)
    assert source == str(data) and len(train) == 6 and len(eval_rows) == 2  # a fifth of 10 rows (data.eval_fraction)
    assert score_variant(kind, None, None, eval_rows, None)["exact_match"] == 1.0
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'text'"):
        (tmp_path / "bad.jsonl").write_text('{"word": "x"}\n')
        load_rows(kind, tmp_path / "bad.jsonl")

    from core.scorecard import model_card

    card = model_card(for_config(cfg, ModelSettings()), "sft", {"exact_match": 1.0}, {"exact_match": 0.5})
    assert "Task type echo." in card and "| exact_match | 1.000 | 0.500 |" in card
    with pytest.raises(NotImplementedError, match="task type 'echo' does not implement teacher_task"):
        kind.teacher_task()  # a part the toy left out says so by name, instead of failing somewhere inside a teacher


def test_a_kind_implements_few_methods_and_the_real_kinds_share_the_interface():
    own = [name for name, value in vars(Echo).items() if callable(value) and not name.startswith("_")]
    assert len(own) <= 8, own
    assert sorted(TaskKind.__abstractmethods__) == ["decoder", "parse_records", "score", "write_report"]
    interface = [n for n, v in vars(TaskKind).items() if callable(v) and not n.startswith("_")]
    assert len(interface) <= 16, interface  # the whole interface: rows 3, scoring 5 (with the paired resample), teaching 4, drift 4
    for kind in KINDS.values():  # nothing public beyond the base's interface (a kind's helpers are private)
        extra = {n for n, v in vars(kind).items() if callable(v) and not n.startswith("_")} - set(dir(TaskKind))
        assert not extra, (kind.type, extra)
