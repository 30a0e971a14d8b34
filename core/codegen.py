"""Code generation: spec -> plan -> Python code, checked by executing the task's tests.

A codegen row (the README's data formats) holds `prompt` (the spec), `tests` (Python source with asserts), and
optionally `entry_point` (the function the tests call) and `solution`. The model answers with a
one-line plan, then the code in a ```python block (`format_answer`); `extract_code` takes the
block back out, and `run_tests` (`core.sandbox`) executes code + tests in a fresh interpreter and
says whether every assert held. Preference pairs for DPO are code that passes against code that fails
(`code_pairs`), from the student's own samples.

    tasks = load_codegen("data/codegen.jsonl")
    answers = sample_answers(model, tokenizer, CODEGEN_INSTRUCTION, [t.prompt for t in tasks], n=4)
    pairs, counts = code_pairs(tasks, answers)
    pass_rate(model, tokenizer, CODEGEN_INSTRUCTION, tasks)["pass_rate"]
"""

from __future__ import annotations

import ast
import itertools
import math
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.common.prompts import render_prompt
from core.common.records import Pair, read_records
from core.errors import DataError
from core.model.decoding import greedy_decode
from core.sandbox import run_all

CODEGEN_INSTRUCTION = (
    "You write Python. Answer with a one-line plan starting with 'Plan:', then the complete function "
    "in one ```python code block, and nothing else."
)
CODE_ONLY_INSTRUCTION = "You write Python. Answer with the complete function in one ```python code block, and nothing else."


@dataclass
class CodeTask:
    id: str
    prompt: str
    tests: str
    entry_point: str | None = None
    solution: str | None = None
    plan: str | None = None


def format_answer(code: str, plan: str | None = None) -> str:
    """The answer format the model is trained on: an optional plan line, then one fenced block."""
    block = f"```python\n{code.strip()}\n```"
    return f"Plan: {plan.strip()}\n{block}" if plan else block


def extract_code(answer: str) -> str:
    """The code of an answer: its last complete ```python block, an unterminated one (cut off), or the text."""
    blocks = re.findall(r"```(?:python|py)?[ \t]*\n(.*?)```", answer, flags=re.S)
    if blocks:
        return blocks[-1].strip()
    opened = re.search(r"```(?:python|py)?[ \t]*\n(.*)", answer, flags=re.S)
    return (opened.group(1) if opened else answer).strip()


def load_codegen(path: str | Path, require_solutions: bool = False, timeout_s: float = 10.0) -> list[CodeTask]:
    """Read codegen rows; refuse unparsable tests, tests without an assert, and solutions that fail their own tests."""
    path = Path(path)
    tasks: list[tuple[int, CodeTask]] = []
    for number, record in read_records(path):
        for field in ("prompt", "tests"):
            if not isinstance(record.get(field), str) or not record[field].strip():
                raise DataError(path, number, field, "missing or empty")
        for field in ("entry_point", "solution", "plan"):
            if record.get(field) is not None and not isinstance(record[field], str):
                raise DataError(path, number, field, f"must be a string, got {type(record[field]).__name__}")
        tree = _parse(path, number, "tests", record["tests"])
        if not any(isinstance(node, ast.Assert) for node in ast.walk(tree)):
            raise DataError(path, number, "tests", "no assert: tests that check nothing pass every answer")
        solution = record.get("solution")
        if solution is None and require_solutions:
            raise DataError(path, number, "solution", "missing (this split trains on solutions)")
        entry = record.get("entry_point")
        if solution is not None and entry:
            defined = {node.name for node in ast.walk(_parse(path, number, "solution", solution)) if isinstance(node, ast.FunctionDef)}
            if entry not in defined:
                raise DataError(path, number, "entry_point", f"{entry!r} is not defined by the solution")
        task_id = str(record.get("id") or f"{path.stem}-{number}")
        tasks.append((number, CodeTask(task_id, record["prompt"], record["tests"], entry, solution, record.get("plan"))))
    with_solution = [(number, task) for number, task in tasks if task.solution is not None]
    results = run_all([(task.solution, task.tests) for _, task in with_solution], timeout_s)
    for (number, _), result in zip(with_solution, results):
        if not result.passed:
            raise DataError(path, number, "solution", f"fails its own tests: {result.error}")
    return [task for _, task in tasks]


def _parse(path: Path, number: int, field: str, source: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        raise DataError(path, number, field, f"not valid Python: {exc.msg} (line {exc.lineno})") from None


@torch.inference_mode()
def sample_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    instruction: str,
    prompts: list[str],
    n: int = 1,
    temperature: float = 0.8,
    max_new_tokens: int = 160,
) -> list[list[str]]:
    """`n` answers per prompt: greedy for n=1 (the shared decode loop, `core.model.decoding`, with its fast path where
    set up), else sampled at `temperature` (one generate call per prompt)."""
    device = next(model.parameters()).device
    answers = []
    for prompt in prompts:
        enc = tokenizer(render_prompt(tokenizer, instruction, prompt), return_tensors="pt", add_special_tokens=False).to(device)
        if n == 1:
            new, _ = greedy_decode(model, dict(enc), max_new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id)
            answers.append([tokenizer.decode(new[0], skip_special_tokens=True)])
            continue
        sampling = dict(do_sample=True, temperature=temperature, top_p=0.95)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, num_return_sequences=n, pad_token_id=tokenizer.pad_token_id, **sampling)
        answers.append([tokenizer.decode(row[enc.input_ids.shape[1] :], skip_special_tokens=True) for row in out])
    return answers


# The lint check of generated code: pyflakes (F) and pycodestyle errors (E) without line length; pinned with ruff's
# version in pyproject.toml, so a rate measured today means the same tomorrow.
LINT_RULES = ("--select", "E,F", "--ignore", "E501")


def syntax_ok(code: str) -> bool:
    """The code parses and compiles (no execution)."""
    try:
        compile(code, "candidate.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def lint_ok(code: str) -> bool:
    """ruff finds nothing under `LINT_RULES` (it reads the code from stdin; nothing is executed)."""
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", *LINT_RULES, "--quiet", "--stdin-filename", "candidate.py", "-"],
        input=code,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"ruff failed: {proc.stderr.strip()[:200]}")
    return proc.returncode == 0


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased estimator of pass@k from n samples of which `correct` passed (Chen et al. 2021, HumanEval)."""
    if n - correct < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - correct + 1, n + 1))


def pass_rate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, instruction: str, tasks: list[CodeTask], max_new_tokens: int = 160
) -> dict:
    """pass@1 with greedy answers: the share of tasks whose answer passes its tests, and why the rest failed (by cause:
    syntax, assertion, timeout, crash, output, incomplete)."""
    answers = [a[0] for a in sample_answers(model, tokenizer, instruction, [t.prompt for t in tasks], 1, max_new_tokens=max_new_tokens)]
    results = run_all([(extract_code(answer), task.tests) for answer, task in zip(answers, tasks)])
    failures = Counter(r.cause for r in results if not r.passed)
    codes = [extract_code(answer) for answer in answers]
    return {
        "pass_rate": sum(r.passed for r in results) / max(len(tasks), 1),
        "syntax_rate": sum(map(syntax_ok, codes)) / max(len(tasks), 1),
        "lint_pass_rate": sum(map(lint_ok, codes)) / max(len(tasks), 1),
        "passed": sum(r.passed for r in results),
        "tasks": len(tasks),
        "failures": dict(failures.most_common()),
        "predictions": [
            {"id": t.id, "passed": r.passed, "cause": r.cause, "error": r.error, "answer": a} for t, r, a in zip(tasks, results, answers)
        ],
    }


def code_pairs(tasks: list[CodeTask], samples: list[list[str]], timeout_s: float = 10.0) -> tuple[list[Pair], dict]:
    """DPO pairs: chosen = code that passes (the student's own passing sample, else the task's solution),
    rejected = one of the student's samples that fails; and how many pairs each source gave."""
    pairs: list[Pair] = []
    counts = {"tasks": len(tasks), "student_passing": 0, "gold": 0, "all_samples_pass": 0, "no_passing_code": 0, "identical": 0}
    flat = run_all([(extract_code(answer), task.tests) for task, answers in zip(tasks, samples) for answer in answers], timeout_s)
    offsets = [0, *itertools.accumulate(len(answers) for answers in samples)]
    for task, answers, start in zip(tasks, samples, offsets):
        checked = flat[start : start + len(answers)]
        failing = [a for a, r in zip(answers, checked) if not r.passed]
        passing = [a for a, r in zip(answers, checked) if r.passed]
        if not failing:
            counts["all_samples_pass"] += 1
            continue
        if passing:
            chosen, source = passing[0], "student_passing"
        elif task.solution is not None:
            chosen, source = format_answer(task.solution, task.plan), "gold"
        else:
            counts["no_passing_code"] += 1
            continue
        if chosen.strip() == failing[0].strip():
            counts["identical"] += 1
            continue
        pairs.append(Pair(task.prompt, chosen, failing[0], source))
        counts[source] += 1
    counts["pairs"] = len(pairs)
    return pairs, counts
