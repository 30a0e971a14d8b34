"""Teacher backends and trace generation against real servers and real models.

The `openai` backend talks to the project's own service (uvicorn on loopback, tiny model) through
its OpenAI-compatible route; fault tests put an ASGI middleware in front of it that answers 429,
500, too slowly, cuts the connection, or returns answers outside the label set.
"""

import socket
import time

import pytest

from core.common.config import TaskConfig
from core.common.prompts import parse_label
from core.common.rows import Example, text_sha256
from core.errors import ConfigError, TeacherUnavailable
from core.kinds import for_config, make_teacher
from core.kinds.extraction import task_schema
from core.teachers.backends import preflight
from core.teachers.deliberate import DeliberateTeacher
from core.teachers.traces import TraceStore, generate_traces
from tests.core.teachers.conftest import openai_cfg


def test_openai_teacher_reads_label_distribution_from_logprobs(server):
    teacher = make_teacher(openai_cfg(server["url"]))
    answer = teacher.answer_one("Num_Bank_Accounts: 3; Interest_Rate: 25; Num_of_Loan: 7; Delay_from_due_date: 40")
    assert answer.error is None and answer.output in ("Good", "Standard", "Bad")
    assert set(answer.label_probs) == {"Good", "Standard", "Bad"}
    assert abs(sum(answer.label_probs.values()) - 1) < 1e-6
    assert answer.label_probs[answer.output] == max(answer.label_probs.values())
    assert 0 < answer.label_probs[answer.output] < 1  # a distribution from top_logprobs, not one-hot
    assert answer.top_logprobs and len(answer.top_logprobs[0]) == 3


def test_openai_teacher_survives_429_500_slow_and_cut(faulty):
    faults = faulty["faults"]
    teacher = make_teacher(openai_cfg(faulty["url"]))
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
    teacher = make_teacher(openai_cfg(faulty["url"], max_retries=6))
    faults.plan.extend(["html", "retry-after:-5", "retry-after:soon", "retry-after:nan", "retry-after:inf"])
    before = faults.seen
    answer = teacher.answer_one("Num_Bank_Accounts: 3")
    assert answer.error is None and answer.output, answer
    assert faults.seen - before == 6


def test_an_interrupt_cancels_the_calls_not_yet_sent(faulty, tmp_path):
    """KeyboardInterrupt while traces are gathered: the calls still queued are dropped, not sent (and paid for)."""
    from core.common.rows import Example
    from core.teachers.traces import TraceStore, generate_traces

    faults = faulty["faults"]
    cfg = openai_cfg(faulty["url"], concurrency=2, max_retries=0)
    real = make_teacher(cfg)
    calls = []

    class Interrupted(type(real)):  # the real backend; its third answer is where the user presses Ctrl-C
        def answer_one(self, text):
            calls.append(text)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return super().answer_one(text)

    teacher = Interrupted(cfg, real.task)
    rows = [Example(id=str(i), text=f"Num_Bank_Accounts: {i}", label=None) for i in range(40)]
    before = faults.seen
    with pytest.raises(KeyboardInterrupt):
        generate_traces(rows, TraceStore(tmp_path / "traces.jsonl"), lambda: teacher, progress=False)
    # the two workers finish what they hold; nothing queued behind them is sent (40 rows were queued)
    assert len(calls) <= 3 + 2 * cfg.teacher.concurrency and faults.seen - before < len(calls), (len(calls), faults.seen - before)


def test_openai_teacher_gives_up_with_a_reason_after_max_retries(faulty):
    faults = faulty["faults"]
    teacher = make_teacher(openai_cfg(faulty["url"], max_retries=2))
    teacher.retry_cap_s = 0.05
    faults.plan.extend(["500"] * 3)
    answer = teacher.answer_one("Interest_Rate: 3")
    assert answer.output is None and "gave up after 3 attempts" in answer.error and "HTTP 500" in answer.error


def test_preflight_names_the_setting_to_fix(server, monkeypatch):
    monkeypatch.delenv("DISTILL_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError, match="DISTILL_TEST_NO_SUCH_KEY' is not a variable the operator allows.*SECRET_ENV_ALLOWED"):
        preflight(openai_cfg(server["url"], api_key_env="DISTILL_TEST_NO_SUCH_KEY"))
    with pytest.raises(ConfigError, match="host 'teacher.attacker.example' is not one the operator allows.*HOSTS_ALLOWED"):
        preflight(openai_cfg("https://teacher.attacker.example", api_key_env="OPENAI_API_KEY"))
    monkeypatch.setenv("DISTILL_SLM_SECRET_ENV_ALLOWED", '["DISTILL_TEST_NO_SUCH_KEY"]')  # the operator allows it
    with pytest.raises(TeacherUnavailable, match="teacher.api_key_env: environment variable DISTILL_TEST_NO_SUCH_KEY"):
        preflight(openai_cfg(server["url"], api_key_env="DISTILL_TEST_NO_SUCH_KEY"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(TeacherUnavailable, match="teacher.base_url: .* is unreachable"):
        preflight(openai_cfg(dead))
    with pytest.raises(TeacherUnavailable, match="teacher.model: 'no-such-model' is not served"):
        preflight(openai_cfg(server["url"], model="no-such-model"))
    with pytest.raises(TeacherUnavailable, match="teacher.model"):
        preflight(TaskConfig.model_validate({"teacher": {"backend": "hf", "model": "/no/such/folder"}}))


def test_parse_label_prefers_exact_then_earliest():
    labels = ["Good", "Standard", "Bad"]
    assert parse_label(" Standard.", labels) == "Standard"
    assert parse_label("It is bad, not good", labels) == "Bad"
    assert parse_label("no idea", labels) is None


@pytest.mark.slow
def test_deliberate_teacher_on_the_embedded_model():
    from demos import creditmix

    rows = [Example(**r) for r in creditmix.generate(40, seed=3)]
    cfg = TaskConfig()
    teacher = DeliberateTeacher(cfg, for_config(cfg).teacher_task(), rows[:36])
    answers = teacher.answer([r.text for r in rows[36:38]])
    for answer in answers:
        # The answer is the label its own (voted, retrieval-mixed) distribution ranks first, and that distribution sums to 1.
        assert answer.output == max(answer.label_probs, key=answer.label_probs.get) and set(answer.label_probs) == set(cfg.labels)
        assert abs(sum(answer.label_probs.values()) - 1) < 1e-6
        assert len(answer.extra["votes"]) == cfg.teacher.votes
        # k shots per vote, twice (the input and its content-free twin): several hundred prompt tokens
        assert answer.prompt_tokens > 4 * cfg.teacher.votes * 40
    # The retrieval histogram counts: with retrieval weight 1, the answer is the neighbours' majority.
    teacher.weight = 1.0
    [answer] = teacher.answer([rows[36].text])
    assert max(answer.label_probs.values()) == answer.label_probs[answer.output]


def test_openai_teacher_extracts_under_the_task_schema(server, tmp_path):
    """idp: the openai backend against the service's own extraction model; answers validate and keep their raw text."""
    from demos.invoices import generate

    cfg = TaskConfig(type="idp")
    cfg.teacher = openai_cfg(server["url"], timeout_s=60.0).teacher.model_copy(update={"model": "invoices:sft"})
    rows = [Example(r["id"], r["document"]) for r in generate(2, seed=13)]
    store = TraceStore(tmp_path / "traces.jsonl")
    summary = generate_traces(rows, store, lambda: make_teacher(cfg), progress=False)
    assert summary["usable"] == 2 and summary["failed"] == 0
    schema = task_schema(cfg)
    for trace in store.usable():
        output, errors = schema.parse(trace["output"])
        assert output is not None and not errors and trace["completion_tokens"] > 0


def test_a_rerun_asks_again_what_failed_in_transit_but_not_what_failed_for_its_content(faulty, tmp_path):
    """Input 1: three 500s (retries run out: a transport fault). Input 2: an answer outside the label set (its content).
    The rerun asks input 1 again, once, and its new answer replaces the failed line; input 2 is not paid for twice."""
    faults = faulty["faults"]
    cfg = openai_cfg(faulty["url"], max_retries=2, concurrency=1)
    rows = [Example("a", "Interest_Rate: 3"), Example("b", "Interest_Rate: 30")]
    store = TraceStore(tmp_path / "traces.jsonl")

    def teacher():
        t = make_teacher(cfg)
        t.retry_cap_s = 0.05
        return t

    faults.plan.extend(["500", "500", "500", "outside"])
    first = generate_traces(rows, store, teacher, progress=False)
    store.close()
    assert first["failed"] == 2 and first["failed_in_transit"] == 1
    before = faults.seen
    store = TraceStore(tmp_path / "traces.jsonl")
    again = generate_traces(rows, store, teacher, progress=False)
    store.close()
    assert faults.seen - before == 1 and again["asked"] == 1  # only the transport's failure
    assert again["failed"] == 1 and again["failed_in_transit"] == 0
    final = TraceStore.read(tmp_path / "traces.jsonl").traces
    assert final[text_sha256("Interest_Rate: 3")]["output"] in ("Good", "Standard", "Bad")
    assert final[text_sha256("Interest_Rate: 30")]["error"].startswith("answer outside the label set")
