"""Code generation: spec -> plan -> Python code, checked by executing the task's tests.

The parts the `codegen` task kind (`core.kinds.codegen`) is built from. A codegen row (the README's data formats)
holds `prompt` (the spec), `tests` (Python source with asserts), and optionally `entry_point` (the function the tests
call), `solution` and `plan`. The model answers with a one-line plan, then the code in a ```python block
(`format_answer`); `extract_code` takes the block back out, and `run_tests` (`core.sandbox`) executes code + tests in
the sandbox and says whether every assert held. `CodeDecoder` writes a variant's answers (greedy or sampled),
`code_metrics` scores them (pass@1, pass@k, syntax, lint, failures by cause), `code_pairs` puts code that passes
against code that fails for DPO.

    tasks = load_codegen("data/codegen.jsonl")
    decoder = CodeDecoder(model, tokenizer, CODEGEN_INSTRUCTION, max_new_tokens=96)
    metrics = code_metrics([t.tests for t in tasks], decoder.answer([t.prompt for t in tasks]))
    pairs, counts = code_pairs(tasks, [[a.text for a in s] for s in decoder.sample([t.prompt for t in tasks], n=4)])
"""

from __future__ import annotations

import ast
import math
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.common.prompts import CODE_ONLY_INSTRUCTION, CODEGEN_INSTRUCTION, Shots, render_prompt  # noqa: F401 (re-exported)
from core.common.records import Pair, read_records
from core.errors import DataError
from core.model.decoding import greedy_decode
from core.sandbox import TestResult, run_all


@dataclass
class CodeTask:
    id: str
    prompt: str
    tests: str | None  # None only for specs without tests (unlabeled traffic): nothing can be verified against them
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


def parse_code_record(record: dict, path: Path, line: int, require_solution: bool = False, require_tests: bool = True) -> CodeTask:
    """One codegen row, checked without running anything: fields present and typed, tests that parse and assert
    something, a solution (where there is one) that defines `entry_point`. Raises DataError naming file, line and field.
    `require_tests=False`: a spec alone (a drift window's traffic) is a row too, with `tests` None."""
    for field in ("prompt", "tests") if require_tests or record.get("tests") is not None else ("prompt",):
        if not isinstance(record.get(field), str) or not record[field].strip():
            raise DataError(path, line, field, "missing or empty")
    for field in ("entry_point", "solution", "plan"):
        if record.get(field) is not None and not isinstance(record[field], str):
            raise DataError(path, line, field, f"must be a string, got {type(record[field]).__name__}")
    tests_problem = check_tests(record["tests"]) if record.get("tests") is not None else None
    if tests_problem:
        raise DataError(path, line, "tests", tests_problem)
    solution = record.get("solution")
    if solution is None and require_solution:
        raise DataError(path, line, "solution", "missing (this split trains on solutions)")
    entry = record.get("entry_point")
    if solution is not None and entry:
        defined = {node.name for node in ast.walk(_parse(path, line, "solution", solution)) if isinstance(node, ast.FunctionDef)}
        if entry not in defined:
            raise DataError(path, line, "entry_point", f"{entry!r} is not defined by the solution")
    task_id = str(record.get("id") or f"{path.stem}-{line}")
    return CodeTask(task_id, record["prompt"], record.get("tests"), entry, solution, record.get("plan"))


def check_tests(tests: str) -> str | None:
    """Why `tests` cannot check an answer (not Python, or no assert: tests that check nothing pass every answer), or None."""
    try:
        tree = ast.parse(tests)
    except SyntaxError as exc:
        return f"not valid Python: {exc.msg} (line {exc.lineno})"
    except (MemoryError, RecursionError, ValueError) as exc:  # 15,000 unary minus signs, deep nesting, NUL bytes
        return f"not valid Python: too deeply nested or malformed ({type(exc).__name__})"
    if not any(isinstance(node, ast.Assert) for node in ast.walk(tree)):
        return "no assert: tests that check nothing pass every answer"
    return None


def check_solutions(path: Path, numbered: list[tuple[int, CodeTask]], timeout_s: float = 10.0) -> None:
    """Run every solution against its own tests (in the sandbox, in parallel); the first that fails stops the read."""
    with_solution = [(line, task) for line, task in numbered if task.solution is not None]
    results = run_all([(task.solution, task.tests) for _, task in with_solution], timeout_s)
    for (line, _), result in zip(with_solution, results):
        if not result.passed:
            raise DataError(path, line, "solution", f"fails its own tests: {result.error}")


def load_codegen(path: str | Path, require_solutions: bool = False, timeout_s: float = 10.0) -> list[CodeTask]:
    """Read codegen rows; refuse unparsable tests, tests without an assert, and solutions that fail their own tests."""
    path = Path(path)
    numbered = [(line, parse_code_record(record, path, line, require_solutions)) for line, record in read_records(path)]
    check_solutions(path, numbered, timeout_s)
    return [task for _, task in numbered]


def _parse(path: Path, number: int, field: str, source: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        raise DataError(path, number, field, f"not valid Python: {exc.msg} (line {exc.lineno})") from None


@dataclass
class CodeAnswer:
    """One generated answer (plan and code as written) and what it cost."""

    text: str
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stopped: bool = True  # ended by the model (end of sequence), not by the token budget

    @property
    def code(self) -> str:
        return extract_code(self.text)


class CodeDecoder:
    """A variant's answers to specs under the task's instruction: greedy (pass@1, the service, the teacher's first
    candidate) in left-padded batches on the shared decode loop (`core.model.decoding`, fast path included where set up),
    or `n` samples per spec at `temperature` (pass@k, teacher candidates, DPO)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        instruction: str,
        max_new_tokens: int = 160,
        batch_size: int = 8,
        temperature: float = 0.8,
    ) -> None:
        self.model, self.tokenizer, self.instruction = model, tokenizer, instruction
        self.max_new_tokens, self.batch_size, self.temperature = max_new_tokens, batch_size, temperature

    def _encode(self, prompts: list[str], shots: list[Shots] | None):
        texts = [render_prompt(self.tokenizer, self.instruction, p, shots[i] if shots else ()) for i, p in enumerate(prompts)]
        device = next(self.model.parameters()).device
        return self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False).to(device)

    @torch.inference_mode()
    def answer(self, prompts: list[str], shots: list[Shots] | None = None, max_new_tokens: int | None = None) -> list[CodeAnswer]:
        """Greedy answers, `batch_size` prompts per decode (latency: each batch's time shared by its rows)."""
        answers, budget = [], min(max_new_tokens or self.max_new_tokens, self.max_new_tokens)
        for begin in range(0, len(prompts), self.batch_size):
            chunk = prompts[begin : begin + self.batch_size]
            enc = self._encode(chunk, shots[begin : begin + self.batch_size] if shots else None)
            start = time.perf_counter()
            new, _ = greedy_decode(self.model, dict(enc), budget, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id)
            share = (time.perf_counter() - start) * 1000 / len(chunk)
            for row, mask in zip(new, enc.attention_mask):
                answers.append(self._answer(row, share, int(mask.sum())))
        return answers

    def _answer(self, row: torch.Tensor, latency_ms: float, prompt_tokens: int) -> CodeAnswer:
        """A decoded row: its text up to the first end-of-sequence (the padding after it may be the same token)."""
        ended = (row == self.tokenizer.eos_token_id).nonzero()
        length = int(ended[0]) if len(ended) else len(row)
        text = self.tokenizer.decode(row[:length], skip_special_tokens=True)
        return CodeAnswer(text, latency_ms, prompt_tokens, length + bool(len(ended)), bool(len(ended)))

    @torch.inference_mode()
    def sample(self, prompts: list[str], n: int, shots: list[Shots] | None = None) -> list[list[CodeAnswer]]:
        """`n` answers per prompt sampled at `temperature` (top-p 0.95), one generate call per prompt."""
        out = []
        for i, prompt in enumerate(prompts):
            enc = self._encode([prompt], [shots[i]] if shots else None)
            start = time.perf_counter()
            rows = self.model.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                num_return_sequences=n,
                do_sample=True,
                temperature=self.temperature,
                top_p=0.95,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            share = (time.perf_counter() - start) * 1000 / n
            out.append([self._answer(row[enc.input_ids.shape[1] :], share, enc.input_ids.shape[1]) for row in rows])
        return out


def sample_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    instruction: str,
    prompts: list[str],
    n: int = 1,
    temperature: float = 0.8,
    max_new_tokens: int = 160,
) -> list[list[str]]:
    """`n` answers per prompt as text: greedy for n=1 (`CodeDecoder.answer`), else sampled (`CodeDecoder.sample`)."""
    decoder = CodeDecoder(model, tokenizer, instruction, max_new_tokens, batch_size=1, temperature=temperature)
    if n == 1:
        return [[a.text] for a in decoder.answer(prompts)]
    return [[a.text for a in answers] for answers in decoder.sample(prompts, n)]


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


def run_grouped(groups: list[list[tuple[str, str]]], timeout_s: float = 10.0) -> list[list[TestResult]]:
    """`run_all` over groups of (code, tests) checks (say, a task's samples) in one parallel pass, results regrouped."""
    flat = iter(run_all([check for group in groups for check in group], timeout_s))
    return [[next(flat) for _ in group] for group in groups]


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased estimator of pass@k from n samples of which `correct` passed (Chen et al. 2021, HumanEval)."""
    if n - correct < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - correct + 1, n + 1))


def code_metrics(
    tests: list[str], greedy: list[CodeAnswer], samples: list[list[CodeAnswer]] | None = None, k: int = 2, timeout_s: float = 10.0
) -> dict:
    """Scores of one variant's answers to tasks with `tests`: pass@1 of the greedy answers, pass@k (the unbiased
    estimator over `samples`, where given), syntax and lint pass rates, failures by cause (syntax, assertion, timeout,
    crash, output, incomplete), latency p50/p95 and tokens per task, and each task's verdict (`predictions`)."""
    n = max(len(tests), 1)
    codes = [a.code for a in greedy]
    results = run_all(list(zip(codes, tests)), timeout_s)
    metrics = {
        "pass_at_1": sum(r.passed for r in results) / n,
        "syntax_rate": sum(map(syntax_ok, codes)) / n,
        "lint_pass_rate": sum(map(lint_ok, codes)) / n,
        "passed": sum(r.passed for r in results),
        "n": len(tests),
        "failures": dict(Counter(r.cause for r in results if not r.passed).most_common()),
        "isolation": sorted({r.isolation for r in results}),  # what confined these runs (bubblewrap, or limits if accepted)
        "latency_ms_p50": float(np.percentile([a.latency_ms for a in greedy], 50)) if greedy else 0.0,
        "latency_ms_p95": float(np.percentile([a.latency_ms for a in greedy], 95)) if greedy else 0.0,
        "prompt_tokens_per_request": float(np.mean([a.prompt_tokens for a in greedy])) if greedy else 0.0,
        "completion_tokens_per_request": float(np.mean([a.completion_tokens for a in greedy])) if greedy else 0.0,
    }
    predictions = [
        {"passed": r.passed, "cause": r.cause, "error": r.error, "isolation": r.isolation, "answer": a.text}
        for r, a in zip(results, greedy)
    ]
    if samples:
        checked = run_grouped([[(a.code, t) for a in answers] for t, answers in zip(tests, samples)], timeout_s)
        correct = [sum(r.passed for r in results) for results in checked]
        metrics["samples_per_task"] = len(samples[0])
        metrics[f"pass_at_{k}"] = float(np.mean([pass_at_k(len(s), c, k) for s, c in zip(samples, correct)]))
        for prediction, c in zip(predictions, correct):
            prediction["samples_passed"] = c
    metrics["predictions"] = predictions
    return metrics


def pass_rate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, instruction: str, tasks: list[CodeTask], max_new_tokens: int = 160
) -> dict:
    """`code_metrics` of the model's greedy answers (one at a time) to `tasks`, with each prediction's task id."""
    answers = CodeDecoder(model, tokenizer, instruction, max_new_tokens, batch_size=1).answer([t.prompt for t in tasks])
    metrics = code_metrics([t.tests for t in tasks], answers)
    for task, prediction in zip(tasks, metrics["predictions"]):
        prediction["id"] = task.id
    return metrics


def code_pairs(tasks: list[CodeTask], samples: list[list[str]], timeout_s: float = 10.0) -> tuple[list[Pair], dict]:
    """DPO pairs: chosen = code that passes (the student's own passing sample, else the task's solution),
    rejected = one of the student's samples that fails; and how many pairs each source gave."""
    pairs: list[Pair] = []
    counts = {"tasks": len(tasks), "student_passing": 0, "gold": 0, "all_samples_pass": 0, "no_passing_code": 0, "identical": 0}
    grouped = run_grouped([[(extract_code(answer), task.tests) for answer in answers] for task, answers in zip(tasks, samples)], timeout_s)
    for task, answers, checked in zip(tasks, samples, grouped):
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
