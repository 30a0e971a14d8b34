"""A task kind is one module plus its registration: a throw-away toy kind, registered in two dicts,
runs through config validation, data loading, splitting, scoring and the model card with no other edit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.common.config import TYPE_DEFAULTS, TaskConfig
from core.common.rows import Example, Pair
from core.common.splits import document_split
from core.errors import ConfigError, DataError
from core.kinds import KINDS, ServedAnswer, TaskKind, kind_of


class Echo(TaskKind):
    """Toy task type: the answer is the input's first word (scored by exact match, no model)."""

    type = "echo"
    summary_keys = ("exact_match",)
    card_keys = ("exact_match",)

    def parse_record(self, cfg, record, path: Path, line: int, require_answer: bool) -> Example:
        if not isinstance(record.get("text"), str):
            raise DataError(path, line, "text", "missing")
        return Example(str(record.get("id") or line), record["text"], record.get("word"))

    def to_record(self, cfg, row):
        return {"id": row.id, "text": row.text, "word": row.label}

    def split(self, cfg, rows):
        return document_split(rows, cfg.data.train_per_class, cfg.data.eval_per_class, cfg.training.seed)

    def hold_out_validation(self, cfg, rows, strict=True):
        return rows, []

    def train_rows(self, cfg, rows):
        return rows

    def decoder(self, cfg, model, tokenizer, adapter=None):
        return lambda text: text.split()[0]

    def score(self, cfg, decoder, rows):
        hits = [decoder(r.text) == r.label for r in rows]
        return {"exact_match": sum(hits) / len(hits), "n": len(rows)}

    def teacher_metrics(self, cfg, rows, traces):
        return {}

    def teacher_task(self, cfg):
        raise NotImplementedError

    def write_report(self, task, results, out_dir):
        (out_dir / "report.md").write_text(json.dumps(results))
        return out_dir / "report.md"

    def kd_rows(self, cfg, traces):
        return [], {}

    def preference_pairs(self, cfg, rows, decoder, teacher_traces):
        return [Pair(r.text, r.label, r.label.upper(), "gold") for r in rows], {}

    def answer(self, engine, batcher, task, variant, text, json_schema, max_schema_bytes):
        return ServedAnswer(task=task, variant=variant, adapter="base", output=text.split()[0])

    def reference_answers(self, cfg, decoder, texts):
        return [{"output": decoder(t)} for t in texts]

    def drift_view(self, cfg, record):
        return {"word": record["output"]} if "output" in record else None

    def agrees(self, cfg, view, teacher_output):
        return view["word"] == teacher_output

    def output_signals(self, cfg, reference, window):
        return []


@pytest.fixture
def echo(monkeypatch):
    monkeypatch.setitem(TYPE_DEFAULTS, "echo", {"instruction": "Repeat the first word."})
    monkeypatch.setitem(KINDS, "echo", Echo())


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
    kind = kind_of(cfg)
    assert isinstance(kind, Echo) and cfg.instruction == "Repeat the first word."
    rows, source = kind.labeled_rows(cfg)
    train, eval_rows = kind.split(cfg, rows)
    assert source == str(data) and len(train) == 6 and len(eval_rows) == 2  # a fifth of 10 rows (data.eval_fraction)
    assert kind.score_variant(cfg, None, None, eval_rows, None)["exact_match"] == 1.0
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'text'"):
        (tmp_path / "bad.jsonl").write_text('{"word": "x"}\n')
        kind.load_rows(cfg, tmp_path / "bad.jsonl")

    from core.scorecard import model_card

    card = model_card(cfg, "sft", {"exact_match": 1.0}, {"exact_match": 0.5})
    assert "Task type echo." in card and "| exact_match | 1.000 | 0.500 |" in card
