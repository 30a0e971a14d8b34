"""The one serving path: a request routed by what the served decoder answers, its budget clamped once to the task's,
the answer built the same way for every type. A real engine over the tiny model, a classification and a codegen task."""

from __future__ import annotations

import pytest
import yaml

from core.common.config import TaskConfig
from core.errors import InvalidRequest, UnknownVariant
from core.registry import Registry
from core.serving.answers import Request, answer_request
from core.serving.batcher import DynamicBatcher
from core.serving.engine import InferenceEngine
from core.settings import ModelSettings
from tests.conftest import make_adapter

TASK_MAX = 12  # the codegen task's max_new_tokens


@pytest.fixture(scope="module")
def serving(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("answers")
    registry = Registry(root / "runs")
    for name, cfg in (("labels", TaskConfig()), ("code", TaskConfig(type="codegen", max_new_tokens=TASK_MAX))):
        cfg.model.base_model = str(tiny_model_dir)
        adapter = make_adapter(cfg, root / name, 3)
        registry.register(name, "sft", adapter, {}, yaml.safe_dump(cfg.model_dump(mode="json")), {})
        registry.promote(name, "sft/v0001", force=True)
    engine = InferenceEngine(str(registry.root), ModelSettings())
    engine.load()
    batcher = DynamicBatcher(engine, max_batch=4, max_wait_ms=1)
    yield engine, batcher
    batcher.close()
    engine.close()


def test_a_label_answer_is_scored_not_generated(serving):
    engine, batcher = serving
    answer = answer_request(engine, batcher, Request("labels", "sft", "Num_Bank_Accounts: 3"), max_schema_bytes=10_000)
    labels = engine.configs["labels"].labels
    assert answer.output in labels and set(answer.label_probs) == set(labels)
    assert answer.confidence == pytest.approx(max(answer.label_probs.values()))
    assert answer.completion_tokens == len(engine.tokenizer(answer.output, add_special_tokens=False).input_ids)
    assert (answer.task, answer.adapter, answer.gate) == ("labels", "sft/v0001", "forced")


def test_a_clients_budget_is_clamped_to_the_tasks(serving):
    engine, batcher = serving
    spec = "Write a Python function `inc(x)` that returns x + 1."
    # A random adapter never stops on its own: every answer runs to its budget.
    huge = answer_request(engine, batcher, Request("code", "sft", spec, max_tokens=100_000), max_schema_bytes=10_000)
    none = answer_request(engine, batcher, Request("code", "sft", spec), max_schema_bytes=10_000)
    small = answer_request(engine, batcher, Request("code", "sft", spec, max_tokens=4), max_schema_bytes=10_000)
    assert huge.completion_tokens == none.completion_tokens == TASK_MAX and huge.finish_reason == "length"
    assert small.completion_tokens == 4 and small.output != none.output


def test_what_a_request_brings_is_checked_and_unknown_variants_named(serving):
    engine, batcher = serving
    with pytest.raises(InvalidRequest, match="tests"):
        answer_request(engine, batcher, Request("code", "sft", "spec", tests="x = 1"), max_schema_bytes=10_000)  # asserts nothing
    with pytest.raises(UnknownVariant):
        answer_request(engine, batcher, Request("code", "dpo", "spec"), max_schema_bytes=10_000)
