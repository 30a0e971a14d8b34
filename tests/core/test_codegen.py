"""Code generation: executing tests, reading answers and rows, the demo set, pairs of passing vs failing code."""

import json

import pytest
import torch

from core.common.config import ModelConfig, TaskConfig
from core.common.prompts import CODEGEN_INSTRUCTION
from core.common.rows import CodeTask
from core.evaluation.code_metrics import pass_rate
from core.kinds.codegen import code_pairs, load_codegen
from core.model.code_decoder import extract_code, format_answer, sample_answers
from core.model.loading import load_model
from core.sandbox import run_tests
from demos import pyfuncs


def test_run_tests_tells_passing_from_failing_code():
    tests = "assert double(3) == 6\nassert double(-1) == -2"
    assert run_tests("def double(x):\n    return 2 * x", tests).passed
    wrong = run_tests("def double(x):\n    return x + 2", tests)
    assert not wrong.passed and wrong.error.startswith("AssertionError")
    broken = run_tests("def double(x) return 2 * x", tests)
    assert not broken.passed and "SyntaxError" in broken.error
    missing = run_tests("def triple(x):\n    return 3 * x", tests)
    assert not missing.passed and "NameError" in missing.error
    endless = run_tests("def double(x):\n    while True:\n        pass", tests, timeout_s=1)
    assert not endless.passed and endless.error


def test_extract_code_takes_the_fenced_block():
    code = "def f(x):\n    return x"
    assert extract_code(format_answer(code, "return x")) == code
    assert format_answer(code, "return x").startswith("Plan: return x\n```python\n")
    assert extract_code("Plan: a\n```py\nold = 1\n```\nthen\n```python\ndef f(x):\n    return x\n```") == code  # the last block
    assert extract_code("Plan: cut off\n```python\ndef f(x):\n    return x") == code  # max_new_tokens ended the answer
    assert extract_code(code) == code  # no fence at all


def test_every_demo_solution_passes_its_tests_and_a_wrong_one_does_not(tmp_path):
    rows = pyfuncs.generate(40, seed=3)
    path = tmp_path / "pyfuncs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = load_codegen(path, require_solutions=True)
    assert len(tasks) == 40 and len({t.prompt for t in tasks}) == 40
    assert all(t.entry_point in t.prompt and t.entry_point in t.tests for t in tasks)
    assert not run_tests(tasks[0].solution.replace("return", "return None and"), tasks[0].tests).passed


def test_pairs_put_passing_code_against_failing_code():
    tasks = [CodeTask("a", "Write inc(x) returning x + 1.", "assert inc(1) == 2", "inc", "def inc(x):\n    return x + 1", "add 1")]
    passing, failing = format_answer("def inc(x):\n    return 1 + x"), format_answer("def inc(x):\n    return x")
    pairs, counts = code_pairs(tasks * 3, [[failing, passing], [failing], [passing]])
    assert [(p.chosen, p.rejected, p.source) for p in pairs] == [
        (passing, failing, "student_passing"),
        (format_answer(tasks[0].solution, "add 1"), failing, "gold"),  # no passing sample: the task's solution
    ]
    assert counts == {"tasks": 3, "student_passing": 1, "gold": 1, "all_samples_pass": 1, "no_passing_code": 0, "identical": 0, "pairs": 2}


def test_embedded_model_answers_are_run_and_become_pairs_that_train(embedded_dir, tiny_cfg, tmp_path):
    """SmolLM2's own samples on demo tasks: tested by execution, paired, and trained on with DPO."""
    from core.training.dpo import train_dpo

    tasks = [CodeTask(**row) for row in pyfuncs.generate(3, seed=1)]
    model, tokenizer = load_model(ModelConfig(base_model=str(embedded_dir)))
    torch.manual_seed(0)
    samples = sample_answers(model, tokenizer, CODEGEN_INSTRUCTION, [t.prompt for t in tasks], n=3, max_new_tokens=64)
    assert [len(s) for s in samples] == [3, 3, 3] and all(isinstance(a, str) for s in samples for a in s)
    pairs, counts = code_pairs(tasks, samples)
    assert counts["pairs"] + counts["all_samples_pass"] + counts["no_passing_code"] + counts["identical"] == 3
    assert counts["pairs"] >= 1  # a 135M model fails some tests
    for pair in pairs:
        task = next(t for t in tasks if t.prompt == pair.prompt)
        assert run_tests(extract_code(pair.chosen), task.tests).passed and not run_tests(extract_code(pair.rejected), task.tests).passed
    report = pass_rate(model, tokenizer, CODEGEN_INSTRUCTION, tasks[:2], max_new_tokens=64)
    assert report["n"] == 2 and report["passed"] == sum(p["passed"] for p in report["predictions"])
    assert 0.0 <= report["pass_at_1"] <= 1.0 and sum(report["failures"].values()) == 2 - report["passed"]

    cfg = TaskConfig(model=tiny_cfg.model, runs_dir=tiny_cfg.runs_dir, work_dir=tiny_cfg.work_dir, instruction=CODEGEN_INSTRUCTION)
    cfg.dpo.min_pairs, cfg.training.batch_size, cfg.training.max_steps, cfg.training.max_length = 1, 2, 1, 512
    adapter, stats = train_dpo(cfg, pairs, tmp_path / "ckpt", tmp_path / "dpo", progress=False)
    assert stats.steps == 1 and (adapter / "adapter_model.safetensors").exists()


def test_syntax_lint_and_pass_at_k():
    from core.evaluation.code_metrics import lint_ok, pass_at_k, syntax_ok

    assert syntax_ok("def f(x):\n    return x") and not syntax_ok("def f(x) return x")
    assert lint_ok("def f(x):\n    return x\n")
    assert not lint_ok("import os\n\n\ndef f(x):\n    return y\n")  # unused import, undefined name
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3) and pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 4, 2) == 1.0  # fewer failures than k: some draw passes


def test_greedy_answers_come_from_the_shared_decode_loop_unchanged(tiny_model_dir):
    from core.common.prompts import CODEGEN_INSTRUCTION, render_prompt
    from core.model.code_decoder import sample_answers

    model, tokenizer = load_model(ModelConfig(base_model=str(tiny_model_dir)))
    prompts = [row["prompt"] for row in pyfuncs.generate(2, seed=4)]
    got = [answers[0] for answers in sample_answers(model, tokenizer, CODEGEN_INSTRUCTION, prompts, n=1, max_new_tokens=24)]
    for prompt, answer in zip(prompts, got):
        enc = tokenizer(render_prompt(tokenizer, CODEGEN_INSTRUCTION, prompt), return_tensors="pt", add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert answer == tokenizer.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize(
    "hostile",
    ["x = " + "-" * 15_000 + "1\nassert x", "assert " + "(" * 5_000 + "1" + ")" * 5_000, "assert [" * 300 + "]" * 300, "assert 1\x00"],
)
def test_hostile_tests_are_refused_as_not_python_never_raised(hostile):
    from core.kinds.codegen import check_tests

    assert check_tests(hostile).startswith("not valid Python")
