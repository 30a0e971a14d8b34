"""The codegen task kind: its rows, the teacher's execution-verified answers, its report."""

import json

import pytest

from core.common.config import TaskConfig
from core.common.prompts import format_answer
from core.common.rows import CodeTask, text_sha256
from core.errors import DataError
from core.kinds import for_config
from core.kinds.codegen import code_pairs, load_codegen
from core.kinds.data import load_rows
from core.sandbox import run_tests
from core.settings import ModelSettings
from core.teachers.base import TeacherAnswer
from core.teachers.traces import _trace
from demos import pyfuncs

GOOD = {
    "prompt": "Write f(x) returning x.",
    "tests": "assert f(2) == 2",
    "entry_point": "f",
    "solution": "def f(x):\n    return x",
    "plan": "return x",
}


def _write(path, records) -> None:
    path.write_text("".join((json.dumps(r) if r is not None else "") + "\n" for r in records))


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("tests", "assert f(1) == ", "not valid Python"),
        ("tests", "print(f(1))", "no assert"),
        ("solution", "def f(x):\n    return x + 1", "fails its own tests: AssertionError"),
        ("entry_point", "g", "'g' is not defined by the solution"),
        ("tests", None, "missing or empty"),
    ],
)
def test_bad_rows_stop_the_read_naming_file_line_and_field(tmp_path, field, value, problem):
    path = tmp_path / "code.jsonl"
    _write(path, [GOOD, None, GOOD | {field: value}])  # a blank line between: the bad row is on line 3
    with pytest.raises(DataError) as err:
        load_rows(for_config(TaskConfig(type="codegen"), ModelSettings()), path)
    assert (str(err.value.path), err.value.line, err.value.field) == (str(path), 3, field) and problem in err.value.problem


def test_rows_carry_their_tests_and_the_answer_format_of_the_plan_switch(tmp_path):
    path = tmp_path / "code.jsonl"
    _write(path, [GOOD, {k: v for k, v in GOOD.items() if k != "solution"}])
    planned = TaskConfig(type="codegen")
    rows = load_rows(for_config(planned, ModelSettings()), path, require_answers=False)
    assert rows[0].label == "Plan: return x\n```python\ndef f(x):\n    return x\n```" and rows[0].tests == GOOD["tests"]
    assert rows[1].label is None and rows[1].tests == GOOD["tests"]
    assert for_config(planned, ModelSettings()).to_record(rows[0]) == {
        "id": "code-1",
        **{k: v for k, v in GOOD.items() if k != "entry_point"},
    }
    code_only = TaskConfig(type="codegen", plan=False)
    assert (
        load_rows(for_config(code_only, ModelSettings()), path, require_answers=False)[0].label == "```python\ndef f(x):\n    return x\n```"
    )
    assert "plan" not in code_only.instruction.lower() and "Plan:" in planned.instruction
    with pytest.raises(DataError, match="solution"):
        load_rows(for_config(planned, ModelSettings()), path)  # training and evaluation rows need their solutions
    _write(path, [{"prompt": "Write g(x) returning 2 * x."}])  # a spec from traffic: a pool row, nothing to verify with
    [spec] = load_rows(for_config(planned, ModelSettings()), path, require_answers=False)
    assert spec.tests is None and for_config(planned, ModelSettings()).to_record(spec) == {"id": "code-1", "prompt": spec.text}
    [unchecked] = (
        for_config(planned, ModelSettings()).teacher_task().check([spec], [TeacherAnswer("```python\ndef g(x):\n    return 2 * x\n```")])
    )
    assert unchecked.output is None and unchecked.error.startswith("no tests")


def test_the_teacher_keeps_only_candidates_that_pass_the_tests(tmp_path):
    """Execution-verified rejection sampling: the first passing candidate is the answer, a task no candidate solves is a
    failed trace (never trained on), and every candidate's verdict is recorded."""
    cfg = TaskConfig(type="codegen")
    path = tmp_path / "code.jsonl"
    _write(path, [GOOD | {"id": "a"}, GOOD | {"id": "b", "prompt": "Write f(x) returning x, again."}, GOOD | {"id": "c", "prompt": "x"}])
    rows = load_rows(for_config(cfg, ModelSettings()), path)
    teaching = for_config(cfg, ModelSettings()).teacher_task()
    wrong, right = "Plan: off by one\n```python\ndef f(x):\n    return x + 1\n```", rows[0].label
    answers = [
        teaching.combine([TeacherAnswer(wrong, latency_s=0.5), TeacherAnswer(right, latency_s=0.5)]),
        teaching.combine([TeacherAnswer(wrong), TeacherAnswer("```python\nimport sys; sys.exit(0)\n```")]),
        TeacherAnswer(None, error="gave up after 6 attempts", transient=True),
    ]
    checked = for_config(cfg, ModelSettings()).teacher_task().check(rows, answers)
    assert checked[0].output == right and checked[0].error is None and checked[0].latency_s == 1.0
    assert [(c["passed"], c["cause"]) for c in checked[0].extra["candidates"]] == [(False, "assertion"), (True, "")]
    assert checked[1].output is None and checked[1].error.startswith("no candidate passed the tests: 2 tried")
    assert [c["cause"] for c in checked[1].extra["candidates"]] == ["assertion", "incomplete"]  # exiting early is no pass
    assert checked[2].transient and "candidates" not in checked[2].extra  # asked again on a rerun, not judged

    traces = {text_sha256(r.text): _trace(r, text_sha256(r.text), a, "hf:x") for r, a in zip(rows, checked)}
    metrics = for_config(cfg, ModelSettings()).teacher_metrics(rows[:2], traces)
    assert metrics["pass_at_1"] == 0.0 and metrics["verified_rate"] == 0.5 and metrics["pass_at_2"] == 0.5
    kd_rows, counts = for_config(cfg, ModelSettings()).kd_rows([t for t in traces.values() if not t.get("error")])
    assert counts["verified_traces"] == 1 and kd_rows[0]["completion"][0]["content"] == right


def test_report_puts_variants_side_by_side_with_a_plot(tmp_path):
    results = {
        "base": {"pass_at_1": 0.25, "syntax_rate": 1.0, "lint_pass_rate": 0.9, "n": 4, "failures": {"assertion": 3}},
        "sft": {"pass_at_1": 0.5, "syntax_rate": 1.0, "lint_pass_rate": 1.0, "n": 4, "failures": {"assertion": 1, "crash": 1}},
    }
    report = for_config(TaskConfig(type="codegen"), ModelSettings()).write_report(results, tmp_path).read_text()
    assert "| pass_at_1 | 0.250 | 0.500 |" in report and "| crash | 0 | 1 |" in report
    assert (tmp_path / "pass_rates.png").stat().st_size > 1000 and "pass_rates.png" in report


def test_run_tests_tells_passing_from_failing_code():
    tests = "assert double(3) == 6\nassert double(-1) == -2"
    assert run_tests("def double(x):\n    return 2 * x", tests, ModelSettings()).passed
    wrong = run_tests("def double(x):\n    return x + 2", tests, ModelSettings())
    assert not wrong.passed and wrong.error.startswith("AssertionError")
    broken = run_tests("def double(x) return 2 * x", tests, ModelSettings())
    assert not broken.passed and "SyntaxError" in broken.error
    missing = run_tests("def triple(x):\n    return 3 * x", tests, ModelSettings())
    assert not missing.passed and "NameError" in missing.error
    endless = run_tests("def double(x):\n    while True:\n        pass", tests, ModelSettings(), timeout_s=1)
    assert not endless.passed and endless.error


def test_every_demo_solution_passes_its_tests_and_a_wrong_one_does_not(tmp_path):
    rows = pyfuncs.generate(40, seed=3)
    path = tmp_path / "pyfuncs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = load_codegen(path, ModelSettings(), require_solutions=True)
    assert len(tasks) == 40 and len({t.prompt for t in tasks}) == 40
    assert all(t.entry_point in t.prompt and t.entry_point in t.tests for t in tasks)
    assert not run_tests(tasks[0].solution.replace("return", "return None and"), tasks[0].tests, ModelSettings()).passed


def test_pairs_put_passing_code_against_failing_code():
    tasks = [CodeTask("a", "Write inc(x) returning x + 1.", "assert inc(1) == 2", "inc", "def inc(x):\n    return x + 1", "add 1")]
    passing, failing = format_answer("def inc(x):\n    return 1 + x"), format_answer("def inc(x):\n    return x")
    pairs, counts = code_pairs(tasks * 3, [[failing, passing], [failing], [passing]], ModelSettings())
    assert [(p.chosen, p.rejected, p.source) for p in pairs] == [
        (passing, failing, "student_passing"),
        (format_answer(tasks[0].solution, "add 1"), failing, "gold"),  # no passing sample: the task's solution
    ]
    assert counts == {"tasks": 3, "student_passing": 1, "gold": 1, "all_samples_pass": 1, "no_passing_code": 0, "identical": 0, "pairs": 2}


@pytest.mark.parametrize(
    "hostile",
    ["x = " + "-" * 15_000 + "1\nassert x", "assert " + "(" * 5_000 + "1" + ")" * 5_000, "assert [" * 300 + "]" * 300, "assert 1\x00"],
)
def test_hostile_tests_are_refused_as_not_python_never_raised(hostile):
    from core.kinds.codegen import check_tests

    assert check_tests(hostile).startswith("not valid Python")
