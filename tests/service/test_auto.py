"""/infer/auto: the student answers when sure, the teacher (an OpenAI-compatible endpoint) when not.

The teacher is the session's other real service (tiny model) reached over HTTP by the `openai`
backend; this module starts its own service over a registry of two tasks whose thresholds force
one path each (1.0: always escalate, 0.0: never).
"""

import httpx
import pytest
import yaml

from core.common.config import TaskConfig
from core.registry import Registry
from core.serving.audit import read_audit
from tests.conftest import make_adapter


@pytest.fixture(scope="module")
def auto_server(server, tiny_model_dir, tmp_path_factory):
    from core.settings import ServiceSettings
    from service.main import serve_in_thread

    root = tmp_path_factory.mktemp("auto")
    registry = Registry(root / "runs")
    adapter = make_adapter(TaskConfig.model_validate({"model": {"base_model": str(tiny_model_dir)}}), root / "adapter", 3)
    for task, threshold, url in (("unsure", 1.0, server["url"]), ("sure", 0.0, server["url"]), ("deadteacher", 1.0, "http://127.0.0.1:9")):
        cfg = TaskConfig.model_validate(
            {
                "name": task,
                "model": {"base_model": str(tiny_model_dir)},
                "escalation": {"threshold": threshold},
                "teacher": {"backend": "openai", "base_url": url + "/v1", "model": "creditmix:sft", "api_key_env": "", "timeout_s": 5},
            }
        )
        registry.register(task, "kd", adapter, {"macro_f1": 0.5}, yaml.safe_dump(cfg.model_dump(mode="json")), {})
        registry.promote(task, "kd/v0001")
    settings = ServiceSettings(runs_dir=root / "runs", audit_log=root / "audit.jsonl")
    srv, url = serve_in_thread(settings)
    yield {"url": url, "settings": settings}
    srv.should_exit = True


def test_auto_escalates_below_the_threshold(auto_server):
    url = auto_server["url"]
    r = httpx.post(url + "/infer/auto", json={"task": "unsure", "input": "Interest_Rate: 25; Num_of_Loan: 6"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tier"] == "teacher" and body["adapter"] == "openai:creditmix:sft" and body["variant"] == "auto"
    assert body["output"] in ("Good", "Standard", "Bad") and abs(sum(body["label_probs"].values()) - 1) < 1e-6

    r = httpx.post(url + "/infer/auto", json={"task": "sure", "input": "Interest_Rate: 25; Num_of_Loan: 6"}, timeout=60)
    body = r.json()
    assert r.status_code == 200 and body["tier"] == "student" and body["adapter"] == "kd/v0001"

    metrics = httpx.get(url + "/metrics").text
    assert 'distill_slm_escalations_total{task="unsure",tier="teacher"} 1.0' in metrics
    assert 'distill_slm_escalations_total{task="sure",tier="student"} 1.0' in metrics
    tiers = [(e.get("task"), e.get("tier")) for e in read_audit(auto_server["settings"].audit_log)]
    assert ("unsure", "teacher") in tiers and ("sure", "student") in tiers
    escalated = [e for e in read_audit(auto_server["settings"].audit_log) if e.get("tier") == "teacher"][-1]
    assert escalated["student"]["adapter"] == "kd/v0001" and escalated["student"]["confidence"] < 1.0  # kept for drift


def test_auto_keeps_the_student_answer_when_the_teacher_is_down(auto_server):
    r = httpx.post(auto_server["url"] + "/infer/auto", json={"task": "deadteacher", "input": "Interest_Rate: 3"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tier"] == "student" and "teacher.base_url" in body["escalation_error"]


def test_auto_for_an_unknown_task_is_a_404(auto_server):
    r = httpx.post(auto_server["url"] + "/infer/auto", json={"task": "nope", "input": "x"}, timeout=60)
    assert r.status_code == 404 and r.json()["error"]["message"]
