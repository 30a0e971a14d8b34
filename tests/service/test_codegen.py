"""Code generation through a running service: plan and code from /infer and /v1, the request's tests run in the sandbox
when the operator allows it (a task in verify_tasks, a key in verify_api_keys)."""

import hashlib
import json

import httpx
import pytest
import yaml
from openai import OpenAI

from core.common.prompts import extract_code
from core.sandbox import run_tests
from core.settings import ModelSettings
from tests.conftest import make_adapter

SPEC = "Write a Python function `add_three(x)` that returns x plus 3."
TESTS = "assert add_three(1) == 4\nassert add_three(-3) == 0"
VERIFY_KEY = "verify-key-1"
KEY = {"X-API-Key": VERIFY_KEY}


@pytest.fixture(scope="module")
def code_server(tiny_model_dir, tmp_path_factory):
    """uvicorn on a loopback port serving a codegen task (a random LoRA over the tiny model) as production."""
    from core.common.config import TaskConfig
    from core.registry import Registry
    from core.settings import ServiceSettings
    from service.main import serve_in_thread

    root = tmp_path_factory.mktemp("code-service")
    cfg = TaskConfig(type="codegen", max_new_tokens=24)
    cfg.model.base_model = str(tiny_model_dir)
    registry = Registry(root / "runs")
    adapter = make_adapter(cfg, root / "adapter", 4)
    registry.register("pyfuncs", "sft", adapter, {"pass_at_1": 0.0}, yaml.safe_dump(cfg.model_dump(mode="json")), {})
    registry.promote("pyfuncs", "sft/v0001", cfg.promotion.model_copy(update={"guard_min": {}}))
    settings = ServiceSettings(
        runs_dir=root / "runs",
        audit_log=root / "audit.jsonl",
        max_tests_bytes=2000,
        verify_tasks=["pyfuncs"],
        verify_api_keys=[VERIFY_KEY],
        client_api_keys=["plain-key"],
    )
    srv, url = serve_in_thread(settings)
    yield url
    srv.should_exit = True


def test_infer_answers_with_code_and_the_verdict_of_the_requests_tests(code_server):
    r = httpx.post(
        f"{code_server}/infer/auto", json={"task": "pyfuncs", "input": SPEC, "verify": True, "tests": TESTS}, headers=KEY, timeout=120
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["adapter"] == "sft/v0001" and body["output"]
    verdict = body["verdict"]
    # The sandbox's verdict on the answer's code, the same as a run of it here (a random model writes no working Python).
    again = run_tests(extract_code(body["output"]), TESTS, ModelSettings())
    assert (verdict["passed"], verdict["cause"] or "") == (again.passed, again.cause) and verdict["isolation"] == again.isolation
    plain = httpx.post(f"{code_server}/infer/base", json={"task": "pyfuncs", "input": SPEC}, timeout=120).json()
    assert plain["adapter"] == "base" and plain["verdict"] is None


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ({"verify": True, "tests": "assert add_three(1) ==="}, "tests", "not valid Python"),
        ({"verify": True, "tests": "print(add_three(1))"}, "tests", "no assert"),
        ({"verify": True, "tests": "assert add_three(1) == 4\n" * 200}, "tests", "over the limit of 2000"),
        ({"verify": True}, "tests", "verify needs the tests"),
        ({"tests": TESTS}, "verify", "without verify"),
        ({"verify": True, "tests": "assert " + "(" * 600 + "1" + ")" * 600}, "tests", "not valid Python"),  # deep nesting
    ],
)
def test_bad_tests_get_a_422_naming_the_field(code_server, body, field, problem):
    r = httpx.post(f"{code_server}/infer/auto", json={"task": "pyfuncs", "input": SPEC} | body, headers=KEY, timeout=60)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == field and problem in r.json()["error"]["message"]


def test_the_openai_client_gets_code_and_a_verdict(code_server):
    client = OpenAI(base_url=f"{code_server}/v1", api_key=VERIFY_KEY)
    completion = client.chat.completions.create(
        model="pyfuncs:production", messages=[{"role": "user", "content": SPEC}], max_tokens=8, extra_body={"tests": TESTS}
    )
    assert completion.usage.completion_tokens <= 8 and completion.choices[0].finish_reason in ("stop", "length")
    extra = completion.model_extra["distill_slm"]
    assert extra["adapter"] == "sft/v0001" and extra["verdict"]["passed"] is False  # 8 tokens of a random model


def test_streamed_code_comes_as_it_is_decoded_with_the_verdict_on_the_last_chunk(code_server):
    client = OpenAI(base_url=f"{code_server}/v1", api_key=VERIFY_KEY)
    ask = {"model": "pyfuncs:production", "messages": [{"role": "user", "content": SPEC}], "extra_body": {"tests": TESTS}}
    whole = client.chat.completions.create(**ask)
    chunks = list(client.chat.completions.create(**ask, stream=True))
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(content) == whole.choices[0].message.content and len(content) > 3
    [finish] = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish.model_extra["distill_slm"]["verdict"]["passed"] == whole.model_extra["distill_slm"]["verdict"]["passed"]


@pytest.mark.parametrize(("headers", "problem"), [({}, "verify_api_keys"), ({"X-API-Key": "plain-key"}, "verify_api_keys")])
def test_tests_are_code_so_only_a_verify_key_may_send_them(code_server, headers, problem):
    r = httpx.post(f"{code_server}/infer/auto", json={"task": "pyfuncs", "input": SPEC, "verify": True, "tests": TESTS}, headers=headers)
    assert r.status_code == 403 and r.json()["error"]["param"] == "tests" and problem in r.json()["error"]["message"], r.text


def test_every_verify_is_audited_with_the_caller_and_the_tests_hash(code_server, tmp_path_factory):
    tests = "assert add_three(2) == 5  # audited"
    r = httpx.post(
        f"{code_server}/infer/auto", json={"task": "pyfuncs", "input": SPEC, "verify": True, "tests": tests}, headers=KEY, timeout=120
    )
    assert r.status_code == 200, r.text
    audit = next(tmp_path_factory.getbasetemp().glob("code-service*/audit.jsonl"))
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    mine = [rec for rec in records if rec.get("tests_sha256") == hashlib.sha256(tests.encode()).hexdigest()]
    assert mine and mine[-1]["caller"] == "key-" + hashlib.sha256(VERIFY_KEY.encode()).hexdigest()[:12]
    assert mine[-1]["verdict"]["isolation"] in ("bubblewrap", "limits") and tests not in json.dumps(mine[-1])


def test_the_openai_teacher_asks_a_code_endpoint_once_per_candidate(code_server):
    """The openai backend's candidates: the first at temperature 0, the rest sampled. This service answers greedily only
    and refuses a temperature above 0 (422), so the sampled candidate fails alone and the greedy one stands."""
    from core.common.config import TaskConfig
    from core.kinds import make_teacher

    cfg = TaskConfig(type="codegen")
    update = {"backend": "openai", "base_url": f"{code_server}/v1", "model": "pyfuncs:production", "api_key_env": "", "candidates": 2}
    cfg.teacher = cfg.teacher.model_copy(update=update)
    answer = make_teacher(cfg, ModelSettings()).answer_one(SPEC)
    assert answer.error is None and answer.extra["candidates"] == [answer.output, None]
    assert answer.completion_tokens > 0 and answer.latency_s > 0


def test_fuzzing_verify_with_hostile_tests_never_gets_a_server_error(code_server):
    """Hypothesis-generated tests (any text, parser bombs, deep nesting, huge literals, escapes an attacker would
    try) sent with a verify key: each is a 422 naming `tests`, or an answer with a verdict; never a 5xx."""
    import os

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    attacks = st.sampled_from(
        [
            "assert " + "-" * 1900 + "1",
            "assert " + "(" * 900 + "1" + ")" * 900,
            "assert [" * 100 + "]" * 100,
            "assert 1\x00",
            "import os\nassert os.system('id') == 0",
            "import ctypes\nassert ctypes.CDLL(None).mount(None, b'/', None, 32 | 4096, None) == 0",
            "assert open('/etc/shadow').read()",
            "x = 'a' * (10 ** 9)\nassert x",
            "def f(): f()\nf()\nassert 1",
        ]
    )
    bodies = st.one_of(attacks, st.text(max_size=200), st.text(max_size=200).map(lambda t: f"assert {t!r}"))
    statuses: dict[int, int] = {}

    @given(tests=bodies)
    @settings(
        max_examples=int(os.environ.get("FUZZ_EXAMPLES", "25")), deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def no_server_error(tests):
        r = httpx.post(
            f"{code_server}/infer/base", json={"task": "pyfuncs", "input": SPEC, "verify": True, "tests": tests}, headers=KEY, timeout=120
        )
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code in (200, 422), r.text
        if r.status_code == 422:
            assert r.json()["error"]["param"] == "tests"
        else:
            assert r.json()["verdict"]["passed"] in (True, False) and len(r.json()["verdict"]["error"] or "") <= 320

    no_server_error()
    print(f"verify fuzzing: statuses {statuses}; 0 server errors")
