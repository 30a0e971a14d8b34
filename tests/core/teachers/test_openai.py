"""The `openai` backend against the project's own service (uvicorn on loopback, tiny model) through its
OpenAI-compatible route; fault tests put an ASGI middleware in front of it that answers 429, 500, too slowly, cuts the
connection, or returns answers outside the label set."""

import time

from core.common.config import TaskConfig
from core.common.rows import Example
from core.kinds import make_teacher
from core.kinds.extraction import task_schema
from core.settings import ModelSettings
from core.teachers.traces import TraceStore, generate_traces
from tests.core.teachers.conftest import openai_cfg


def test_openai_teacher_reads_label_distribution_from_logprobs(server):
    teacher = make_teacher(openai_cfg(server["url"]), ModelSettings())
    answer = teacher.answer_one("Num_Bank_Accounts: 3; Interest_Rate: 25; Num_of_Loan: 7; Delay_from_due_date: 40")
    assert answer.error is None and answer.output in ("Good", "Standard", "Bad")
    assert set(answer.label_probs) == {"Good", "Standard", "Bad"}
    assert abs(sum(answer.label_probs.values()) - 1) < 1e-6
    assert answer.label_probs[answer.output] == max(answer.label_probs.values())
    assert 0 < answer.label_probs[answer.output] < 1  # a distribution from top_logprobs, not one-hot
    assert answer.top_logprobs and len(answer.top_logprobs[0]) == 3


def test_openai_teacher_survives_429_500_slow_and_cut(faulty):
    faults = faulty["faults"]
    teacher = make_teacher(openai_cfg(faulty["url"]), ModelSettings())
    faults.plan.extend(["429", "500", "slow", "cut"])
    before = faults.seen
    start = time.perf_counter()
    answer = teacher.answer_one("Interest_Rate: 3; Num_of_Loan: 1")
    assert answer.error is None and answer.output in ("Good", "Standard", "Bad")
    assert faults.seen - before == 5  # four faults, each retried, then the answer
    assert time.perf_counter() - start >= 0.2 + 1.0  # Retry-After honoured; the slow one hit the 1 s timeout


def test_teacher_faults_are_retried_not_fatal(faulty):
    """A 200 whose body is not JSON, and 429s whose Retry-After is negative, not a number, NaN or infinite: transient
    faults, retried on the teacher's own schedule; the answer after them stands."""
    faults = faulty["faults"]
    teacher = make_teacher(openai_cfg(faulty["url"], max_retries=6), ModelSettings())
    faults.plan.extend(["html", "retry-after:-5", "retry-after:soon", "retry-after:nan", "retry-after:inf"])
    before = faults.seen
    answer = teacher.answer_one("Num_Bank_Accounts: 3")
    assert answer.error is None and answer.output, answer
    assert faults.seen - before == 6


def test_openai_teacher_gives_up_with_a_reason_after_max_retries(faulty):
    faults = faulty["faults"]
    teacher = make_teacher(openai_cfg(faulty["url"], max_retries=2), ModelSettings())
    teacher.retry_cap_s = 0.05
    faults.plan.extend(["500"] * 3)
    answer = teacher.answer_one("Interest_Rate: 3")
    assert answer.output is None and "gave up after 3 attempts" in answer.error and "HTTP 500" in answer.error


def test_openai_teacher_extracts_under_the_task_schema(server, tmp_path):
    """idp: the openai backend against the service's own extraction model; answers validate and keep their raw text."""
    from demos.invoices import generate

    cfg = TaskConfig(type="idp")
    cfg.teacher = openai_cfg(server["url"], timeout_s=60.0).teacher.model_copy(update={"model": "invoices:sft"})
    rows = [Example(r["id"], r["document"]) for r in generate(2, seed=13)]
    store = TraceStore(tmp_path / "traces.jsonl")
    summary = generate_traces(rows, store, lambda: make_teacher(cfg, ModelSettings()), progress=False)
    assert summary["usable"] == 2 and summary["failed"] == 0
    schema = task_schema(cfg, ModelSettings())
    for trace in store.usable():
        output, errors = schema.parse(trace["output"])
        assert output is not None and not errors and trace["completion_tokens"] > 0
