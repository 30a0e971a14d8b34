"""OpenAI eval definitions: graders parsed (supported and not, by name), items as eval rows, answers graded, bad input
named by file, line and field; and the graders in a real evaluation's report (tiny model)."""

import json
from pathlib import Path

import pytest

from core.common.openai_evals import answer_text, load_openai_eval, write_imported
from core.errors import DataError
from core.settings import ModelSettings

DATA = Path(__file__).resolve().parents[2] / "data" / "openai"


def test_graders_items_and_what_is_not_run():
    ev = load_openai_eval(DATA / "eval_definition.json", DATA / "eval_data.jsonl")
    assert [g.name for g in ev.graders] == ["Match output to human label", "Mentions the label", "Close to the label", "Polite"]
    assert ev.unsupported == ["BLEU (text_similarity bleu)"] and ev.needs_model()
    rows = ev.rows()
    assert len(rows) == 12 and rows[0].id == "eval-00001" and rows[0].text.startswith("Num_Bank_Accounts")
    assert {r.label for r in rows} <= {"Good", "Standard", "Bad"}


def test_each_operation_scores_as_documented():
    ev = load_openai_eval(DATA / "eval_definition.json", DATA / "eval_data.jsonl")
    gold = {r.id: r.label for r in ev.rows()}
    first, second = list(gold)[:2]
    answers = {first: gold[first], second: f"I think: {gold[second].upper()}"}
    graded = ev.grade(answers)
    assert graded["Polite"]["not_run"] and graded["Polite"]["rows"] == 0  # no grading model given
    assert graded["Match output to human label"] == {"type": "string_check (eq)", "pass_rate": 0.5, "mean_score": 0.5, "rows": 2}
    assert graded["Mentions the label"]["pass_rate"] == 1.0  # ilike: contains, case ignored
    close = graded["Close to the label"]
    assert close["pass_rate"] == 0.5 and 0.5 < close["mean_score"] < 1.0  # the padded answer is similar, under 0.8


def test_answers_read_as_the_graders_read_them():
    assert answer_text({"pred": "Good"}) == "Good"
    assert answer_text({"output": {"b": 1, "a": 2}}) == '{"a": 2, "b": 1}'


def test_bad_definitions_and_items_are_named(tmp_path):
    definition = json.loads((DATA / "eval_definition.json").read_text())
    definition["testing_criteria"][0]["operation"] = "contains"
    (tmp_path / "bad.json").write_text(json.dumps(definition))
    with pytest.raises(DataError, match=r"field 'testing_criteria\[0\].operation': 'contains'"):
        load_openai_eval(tmp_path / "bad.json", DATA / "eval_data.jsonl")
    (tmp_path / "data.jsonl").write_text('{"item": {"profile_text": "x", "correct_label": "Good"}}\n{"item": {"profile_text": "y"}}\n')
    with pytest.raises(DataError, match=r"data.jsonl:2: field 'item.correct_label': missing"):
        load_openai_eval(DATA / "eval_definition.json", tmp_path / "data.jsonl").rows(source=str(tmp_path / "data.jsonl"))


def test_an_imported_eval_is_the_evaluation_and_its_graders_are_in_the_report(tiny_cfg, tmp_path):
    from core.kinds import for_config
    from core.kinds.data import load_rows
    from core.scorecard import evaluate_run
    from tests.conftest import make_adapter

    found = write_imported(DATA / "eval_definition.json", DATA / "eval_data.jsonl", tmp_path / "imported")
    assert found["rows"] == 12 and found["graders_not_supported"] == ["BLEU (text_similarity bleu)"]
    tiny_cfg.data.eval = Path(found["task_file"]["data"]["eval"])
    tiny_cfg.data.openai_eval = Path(found["task_file"]["data"]["openai_eval"])
    rows = load_rows(for_config(tiny_cfg, ModelSettings()), tiny_cfg.data.eval)
    card = evaluate_run(
        for_config(tiny_cfg, ModelSettings()), rows, {"sft": make_adapter(tiny_cfg, tmp_path / "adapter", seed=3)}, tmp_path / "eval"
    )

    for variant in ("base", "sft"):
        graded = card.results[variant]["openai_graders"]["Match output to human label"]
        assert graded["rows"] == 12
        assert graded["pass_rate"] == pytest.approx(card.results[variant]["accuracy"])  # eq on the label is accuracy
    report = card.report.read_text()
    assert "## OpenAI eval graders" in report and "BLEU (text_similarity bleu)" in report
    # the demo's teacher is the embedded one: no endpoint to grade with, and the report says so
    assert card.results["sft"]["openai_graders"]["Polite"]["not_run"].startswith("needs a grading model")
    assert "Not run: Polite: needs a grading model: set teacher.backend: openai" in report


def test_a_label_model_grader_is_graded_by_the_teacher_endpoint(tmp_path):
    """A grading model on a real loopback endpoint (it says 'polite' to answers with 'please', 'Rude.' to the rest, and
    something else to 'Standard'), reached through the OpenAI teacher's transport."""
    from fastapi import FastAPI, Request

    from core.common.config import TaskConfig
    from core.teachers.openai import OpenAITeacher
    from service.main import serve_app_in_thread

    app, asked = FastAPI(), []

    @app.post("/v1/chat/completions")
    async def grade(request: Request) -> dict:
        body = await request.json()
        asked.append(body["messages"])
        answer = body["messages"][0]["content"]
        reply = "I cannot tell" if answer == "Standard" else "polite" if "please" in answer else "Rude."
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}]}

    @app.get("/readyz")
    async def ready() -> dict:
        return {"ready": True}

    server, url = serve_app_in_thread(app)
    try:
        cfg = TaskConfig(teacher={"backend": "openai", "model": "judge", "base_url": f"{url}/v1", "api_key_env": ""})
        ev = load_openai_eval(DATA / "eval_definition.json", DATA / "eval_data.jsonl")
        ids = ev.ids()
        answers = {ids[0]: "Good, please", ids[1]: "Bad", ids[2]: "Standard", ids[3]: "please wait"}
        teacher = OpenAITeacher(cfg, ModelSettings())
        polite = ev.grade(answers, ask=teacher.chat, concurrency=2)["Polite"]
        teacher.close()
    finally:
        server.should_exit = True
    assert polite == {
        "type": "label_model, gpt-4o at OpenAI",
        "pass_rate": 2 / 3,
        "mean_score": 2 / 3,
        "rows": 3,
        "ungraded": 1,  # 'I cannot tell' names no label
        "labels": {"polite": 2, "rude": 1},
    }
    assert len(asked) == 4 and asked[0][-1] == {
        "role": "system",
        "content": "Reply with exactly one of these labels and nothing else: polite, rude.",
    }


def test_a_label_model_grader_without_labels_to_pass_is_refused(tmp_path):
    definition = json.loads((DATA / "eval_definition.json").read_text())
    definition["testing_criteria"][4]["passing_labels"] = ["kind"]
    (tmp_path / "bad.json").write_text(json.dumps(definition))
    with pytest.raises(DataError, match=r"field 'testing_criteria\[4\].passing_labels': \['kind'\]: a non-empty subset"):
        load_openai_eval(tmp_path / "bad.json", DATA / "eval_data.jsonl")
