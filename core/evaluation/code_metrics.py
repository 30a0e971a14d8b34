"""Code generation's metrics: pass@1 and pass@k from sandboxed test runs (`core.sandbox`), syntax and lint rates,
failures by cause.

    metrics = code_metrics([t.tests for t in tasks], decoder.answer([t.prompt for t in tasks]), ModelSettings())
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.common.prompts import CODE_ONLY_INSTRUCTION, CODEGEN_INSTRUCTION, Shots, render_prompt  # noqa: F401 (re-exported)
from core.common.rows import CodeTask
from core.model.code_decoder import CodeAnswer, CodeDecoder
from core.sandbox import run_all, run_grouped
from core.settings import ModelSettings

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


def code_metrics(
    tests: list[str],
    greedy: list[CodeAnswer],
    settings: ModelSettings,
    samples: list[list[CodeAnswer]] | None = None,
    k: int = 2,
    timeout_s: float = 10.0,
) -> dict:
    """Scores of one variant's answers to tasks with `tests`: pass@1 of the greedy answers, pass@k (the unbiased
    estimator over `samples`, where given), syntax and lint pass rates, failures by cause (syntax, assertion, timeout,
    crash, output, incomplete), latency p50/p95 and tokens per task, and each task's verdict (`predictions`)."""
    n = max(len(tests), 1)
    codes = [a.code for a in greedy]
    results = run_all(list(zip(codes, tests)), settings, timeout_s)
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
        checked = run_grouped([[(a.code, t) for a in answers] for t, answers in zip(tests, samples)], settings, timeout_s)
        correct = [sum(r.passed for r in results) for results in checked]
        metrics["samples_per_task"] = len(samples[0])
        metrics[f"pass_at_{k}"] = float(np.mean([pass_at_k(len(s), c, k) for s, c in zip(samples, correct)]))
        for prediction, c in zip(predictions, correct):
            prediction["samples_passed"] = c
    metrics["predictions"] = predictions
    return metrics


def pass_rate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    instruction: str,
    tasks: list[CodeTask],
    settings: ModelSettings,
    max_new_tokens: int = 160,
) -> dict:
    """`code_metrics` of the model's greedy answers (one at a time) to `tasks`, with each prediction's task id."""
    answers = CodeDecoder(model, tokenizer, instruction, max_new_tokens, batch_size=1).answer([t.prompt for t in tasks])
    metrics = code_metrics([t.tests for t in tasks], answers, settings)
    for task, prediction in zip(tasks, metrics["predictions"]):
        prediction["id"] = task.id
    return metrics
