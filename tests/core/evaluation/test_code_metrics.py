"""Code generation's metrics: syntax, lint, pass@k, and pass rates of the embedded model's answers run in the sandbox."""

import pytest
import torch

from core.common.config import ModelConfig, TaskConfig
from core.common.prompts import CODEGEN_INSTRUCTION, extract_code
from core.common.rows import CodeTask
from core.evaluation.code_metrics import pass_rate
from core.kinds.codegen import code_pairs
from core.model.code_decoder import sample_answers
from core.model.loading import load_model
from core.sandbox import run_tests
from core.settings import ModelSettings
from demos import pyfuncs


def test_embedded_model_answers_are_run_and_become_pairs_that_train(embedded_dir, tiny_cfg, tmp_path):
    """SmolLM2's own samples on demo tasks: tested by execution, paired, and trained on with DPO."""
    from core.training.dpo_trainer import train_dpo

    tasks = [CodeTask(**row) for row in pyfuncs.generate(3, seed=1)]
    model, tokenizer = load_model(ModelConfig(base_model=str(embedded_dir)), ModelSettings())
    torch.manual_seed(0)
    samples = sample_answers(model, tokenizer, CODEGEN_INSTRUCTION, [t.prompt for t in tasks], n=3, max_new_tokens=64)
    assert [len(s) for s in samples] == [3, 3, 3] and all(isinstance(a, str) for s in samples for a in s)
    pairs, counts = code_pairs(tasks, samples, ModelSettings())
    assert counts["pairs"] + counts["all_samples_pass"] + counts["no_passing_code"] + counts["identical"] == 3
    assert counts["pairs"] >= 1  # a 135M model fails some tests
    for pair in pairs:
        task = next(t for t in tasks if t.prompt == pair.prompt)
        assert (
            run_tests(extract_code(pair.chosen), task.tests, ModelSettings()).passed
            and not run_tests(extract_code(pair.rejected), task.tests, ModelSettings()).passed
        )
    report = pass_rate(model, tokenizer, CODEGEN_INSTRUCTION, tasks[:2], ModelSettings(), max_new_tokens=64)
    assert report["n"] == 2 and report["passed"] == sum(p["passed"] for p in report["predictions"])
    assert 0.0 <= report["pass_at_1"] <= 1.0 and sum(report["failures"].values()) == 2 - report["passed"]

    cfg = TaskConfig(model=tiny_cfg.model, runs_dir=tiny_cfg.runs_dir, work_dir=tiny_cfg.work_dir, instruction=CODEGEN_INSTRUCTION)
    cfg.dpo.min_pairs, cfg.training.batch_size, cfg.training.max_steps, cfg.training.max_length = 1, 2, 1, 512
    adapter, stats = train_dpo(cfg, ModelSettings(), pairs, tmp_path / "ckpt", tmp_path / "dpo", progress=False)
    assert stats.steps == 1 and (adapter / "adapter_model.safetensors").exists()


def test_syntax_lint_and_pass_at_k():
    from core.evaluation.code_metrics import lint_ok, pass_at_k, syntax_ok

    assert syntax_ok("def f(x):\n    return x") and not syntax_ok("def f(x) return x")
    assert lint_ok("def f(x):\n    return x\n")
    assert not lint_ok("import os\n\n\ndef f(x):\n    return y\n")  # unused import, undefined name
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3) and pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 4, 2) == 1.0  # fewer failures than k: some draw passes
