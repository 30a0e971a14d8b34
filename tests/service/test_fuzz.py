"""Schema-driven fuzzing of the running service from its own OpenAPI document: never a 5xx.

Drives schemathesis's Hypothesis strategies directly (its pytest plugin does not load under
pytest 9 here). `FUZZ_EXAMPLES=200 pytest tests/service/test_fuzz.py` runs the issue's 200 examples per route
(25 in CI, for time).
"""

import os

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error


def test_no_operation_answers_with_a_server_error(server):
    before = _requests_served(server)
    schema = schemathesis.openapi.from_url(server["url"] + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/infer/{variant}", "/v1/chat/completions", "/admin/reload"}
    sent: dict[str, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=int(os.environ.get("FUZZ_EXAMPLES", "25")), deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def no_server_error(case):
            sent[operation.label] = sent.get(operation.label, 0) + 1
            case.call_and_validate(checks=[not_a_server_error])

        no_server_error()
    after = _requests_served(server)
    print(f"fuzzing: examples per operation (hypothesis stops early where it runs out of distinct inputs) {sent}; 0 server errors")
    assert after - before > 5 * len(operations)  # the fuzzer really sent traffic
    assert httpx.get(server["url"] + "/healthz").status_code == 200


def _requests_served(server) -> float:
    text = httpx.get(server["url"] + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("distill_slm_requests_total{"))
