"""The classification kind: rows, splits, the teacher's replies read as label distributions, its traces scored."""

import math

import pytest

from core.common.config import TaskConfig
from core.common.rows import Example, text_sha256
from core.errors import DataError
from core.kinds import for_config
from core.kinds.classification import label_balanced
from core.kinds.data import labeled_rows, load_rows, split
from core.settings import ModelSettings


def test_demo_rows_round_trip_through_the_file_format(tmp_path):
    cfg = TaskConfig()
    cfg.data.demo.n_rows = 60
    rows, source = labeled_rows(for_config(cfg, ModelSettings()))
    assert len(rows) == 60 and source.startswith("creditmix generator")
    path = tmp_path / "rows.jsonl"
    from core.common.files import write_jsonl

    write_jsonl(path, [for_config(cfg, ModelSettings()).to_record(r) for r in rows])
    assert load_rows(for_config(cfg, ModelSettings()), path) == rows
    train, eval_rows = split(for_config(cfg, ModelSettings()), rows)
    assert {r.label for r in eval_rows} == set(cfg.labels) and not {r.id for r in eval_rows} & {r.id for r in train}


def test_an_unlabeled_pool_needs_no_label_but_a_training_file_does(tmp_path):
    cfg = TaskConfig()
    path = tmp_path / "pool.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n')
    assert [r.label for r in load_rows(for_config(cfg, ModelSettings()), path, require_answers=False)] == [None, None]
    with pytest.raises(DataError, match=r"pool.jsonl:1: field 'label': missing"):
        load_rows(for_config(cfg, ModelSettings()), path)


def test_the_openai_reply_becomes_a_label_distribution_from_first_token_alternatives():
    teaching = for_config(TaskConfig(), ModelSettings()).teacher_task()
    top = [[["Stand", math.log(0.6)], ["Good", math.log(0.3)], ["xyz", math.log(0.1)]]]
    answer = teaching.read_reply("Standard", top, 0.1, 20, 1)
    assert answer.output == "Standard" and answer.label_probs["Standard"] == pytest.approx(2 / 3)
    assert teaching.read_reply("no idea", [], 0.1, 20, 1).error.startswith("answer outside the label set")
    assert teaching.read_reply("bad.", [], 0.1, 20, 1).label_probs == {"Good": 0.0, "Standard": 0.0, "Bad": 1.0}


def test_teacher_metrics_count_failed_traces_as_wrong():
    cfg = TaskConfig()
    rows = [Example("a", "x", "Good"), Example("b", "y", "Bad")]
    trace = {"teacher": "t", "latency_s": 0.1, "prompt_tokens": 10, "completion_tokens": 1}
    traces = {
        text_sha256("x"): trace | {"output": "Good", "label_probs": {"Good": 0.9, "Standard": 0.05, "Bad": 0.05}},
        text_sha256("y"): trace | {"output": None, "error": "empty answer"},
    }
    m = for_config(cfg, ModelSettings()).teacher_metrics(rows, traces)
    assert m["accuracy"] == 0.5 and m["failed"] == 1 and m["prompt_tokens_per_request"] == 10.0
    with pytest.raises(ValueError, match="1 eval rows have no teacher trace"):
        for_config(cfg, ModelSettings()).teacher_metrics(rows + [Example("c", "z", "Bad")], traces)


def test_label_balanced_pairs_choose_each_label_as_often_as_they_reject_it():
    from core.common.rows import Pair

    pairs = (
        [Pair("t", "Good", "Standard", "gold")] * 3 + [Pair("t", "Bad", "Standard", "gold")] * 2 + [Pair("t", "Standard", "Good", "gold")]
    )
    kept = label_balanced(pairs)
    for label in ("Good", "Standard", "Bad"):
        assert sum(p.chosen == label for p in kept) == sum(p.rejected == label for p in kept)
    assert len(kept) == 2


def test_self_training_keeps_pool_answers_as_confident_as_the_validation_threshold():
    """The threshold is the lowest confidence at which the labeler's validation answers are min_precision correct."""
    cfg = TaskConfig()
    cfg.self_training.min_precision = 0.75
    base = {"teacher": "deliberate+sft", "latency_s": 0.1, "prompt_tokens": 10, "completion_tokens": 1}

    def trace(text, output, confidence):
        rest = (1 - confidence) / 2
        probs = {label: (confidence if label == output else rest) for label in cfg.labels}
        return base | {"id": text, "prompt": text, "input_sha256": text_sha256(text), "output": output, "label_probs": probs}

    validation = [Example(f"v{i}", f"v{i}", gold) for i, gold in enumerate(["Good", "Bad", "Standard", "Good"])]
    answered = [("Good", 0.9), ("Bad", 0.8), ("Good", 0.7), ("Good", 0.5)]  # wrong at 0.7: 3 of 4 right from 0.5
    checked = {text_sha256(r.text): trace(r.text, out, c) for r, (out, c) in zip(validation, answered)}
    pool = [
        trace("p1", "Bad", 0.95),
        trace("p2", "Good", 0.4),
        trace("p3", "Standard", 0.5),
        base | {"id": "p4", "output": None, "error": "x"},
    ]
    kept, report = for_config(cfg, ModelSettings()).confident_rows(validation, checked, pool)
    assert [(e.text, e.label) for e in kept] == [("p1", "Bad"), ("p3", "Standard")]
    assert report["threshold"]["threshold"] == 0.5 and report["pool_failed"] == 1 and report["pool_kept"] == 2
    cfg.self_training.min_precision = 1.0
    kept, report = for_config(cfg, ModelSettings()).confident_rows(validation, checked, pool)
    assert [e.text for e in kept] == ["p1"] and report["threshold"]["threshold"] == 0.8


def test_self_training_needs_sft_in_the_same_run():
    with pytest.raises(ValueError, match="add 'sft' to methods"):
        TaskConfig(methods=["selftrain"])


def test_any_label_set_the_tokenizer_tells_apart_passes_the_kd_check(tiny_cfg):
    """'Bug' begins 'Bugfix', P1/P2/P3 share "P": the KD term scores whole label sequences, so both are fine."""
    from core.kinds import for_config

    tiny_cfg.methods = ["sft", "kd"]
    for labels in (["Bug", "Bugfix"], ["P1", "P2", "P3"], ["approve", "review-manual", "review-legal"]):
        tiny_cfg.labels = labels
        assert for_config(tiny_cfg, ModelSettings()).check_task() == []
