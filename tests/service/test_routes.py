"""The routes, for real: uvicorn on a loopback port over the service, driven by plain HTTP and the official openai client."""

import json
import threading
import time

import httpx
import openai
import pytest

from core.serving.audit import read_audit
from core.settings import ModelSettings
from tests.conftest import ADMIN_KEY, FINE_TUNED, batch_size_counts


def test_infer_base_and_sft(server):
    """sft serves v0001, the version that passed its gate, not the newer v0002 that no gate has passed; the answer says so."""
    for variant, adapter, gate in [("base", "base", None), ("sft", "sft/v0001", "passed")]:
        r = httpx.post(server["url"] + f"/infer/{variant}", json={"task": "creditmix", "input": "Num_Bank_Accounts: 3"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["adapter"] == adapter and body["gate"] == gate and body["output"] in ("Good", "Standard", "Bad")
        assert abs(sum(body["label_probs"].values()) - 1) < 1e-5 and body["request_id"]


def test_openai_client_lists_models_and_chats(server):
    client = openai.OpenAI(base_url=server["url"] + "/v1", api_key="client-key")
    ids = {m.id for m in client.models.list()}
    assert {"creditmix:base", "creditmix:sft", "creditmix:production"} <= ids
    reply = client.chat.completions.create(model="creditmix:production", messages=[{"role": "user", "content": "Interest_Rate: 25"}])
    assert reply.choices[0].message.content in ("Good", "Standard", "Bad")
    records = read_audit(server["settings"].audit_log)
    [chat] = [r for r in records if r.get("request_id") == reply.id]  # other tests share this server and its log
    assert chat["adapter"] == "sft/v0001" and chat["caller"].startswith("key-") and chat["input"] == "Interest_Rate: 25"


@pytest.mark.parametrize(
    "path, payload, status, field",
    [
        ("/infer/sft", {"task": "creditmix"}, 422, "input"),
        ("/infer/sft", {"task": "creditmix", "input": 42}, 422, "input"),
        ("/infer/nope", {"task": "creditmix", "input": "x"}, 422, "variant"),
        ("/infer/sft", {"task": "no-such-task", "input": "x"}, 404, "task"),
        ("/infer/kd", {"task": "creditmix", "input": "x"}, 404, "task"),
        ("/infer/sft", {"task": "creditmix", "input": "x" * 9000}, 413, "input"),
        ("/infer/sft", {"task": "creditmix", "input": "Num_of_Loan: 7; " * 400}, 413, "input"),  # 6,400 characters, over 1,024 tokens
        ("/v1/chat/completions", {"model": "creditmix:sft", "messages": []}, 422, "messages"),
        # A field the task's kind does not take is refused by the runtime before the kind is asked.
        ("/infer/sft", {"task": "creditmix", "input": "x", "json_schema": {"type": "object"}}, 422, "json_schema"),
        (
            "/v1/chat/completions",
            {
                "model": "creditmix:sft",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
            },
            422,
            "json_schema",
        ),
    ],
)
def test_bad_requests_get_4xx_json_naming_the_field(server, path, payload, status, field):
    r = httpx.post(server["url"] + path, json=payload, headers={"X-API-Key": "client-key"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field
    assert httpx.get(server["url"] + "/healthz").status_code == 200  # still serving
    refused = read_audit(server["settings"].audit_log)[-1]  # refused requests are audited too
    assert refused["route"] == path and refused["status"] == status and refused["field"] == field
    assert refused["error"] == r.json()["error"]["message"] and refused["caller"].startswith("key-")


def test_malformed_json_and_oversized_body(server):
    r = httpx.post(server["url"] + "/infer/sft", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
    r = httpx.post(server["url"] + "/infer/sft", content=b"x" * 1_100_000, headers={"content-type": "application/json"})
    assert r.status_code == 413
    # Bodies the JSON parser cannot even read (bad UTF-8, nesting past its recursion limit) get the same error shape.
    for body in (b'{"task": "creditmix", "input": "\xff\xfe"}', b"[" * 100_000 + b"]" * 100_000):
        r = httpx.post(server["url"] + "/infer/sft", content=body, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500 and set(r.json()["error"]) >= {"message", "type", "param", "code"}


def test_admin_reload_needs_a_key_and_swaps_under_load(server):
    url = server["url"]
    assert httpx.post(url + "/admin/reload").status_code == 401
    assert httpx.post(url + "/admin/reload", headers={"X-API-Key": "wrong"}).status_code == 403

    server["registry"].promote("creditmix", "sft/v0002")
    failures, answered, stop = [], [], threading.Event()

    def client():
        with httpx.Client() as c:
            while not stop.is_set():
                r = c.post(url + "/infer/sft", json={"task": "creditmix", "input": "Num_of_Loan: 7"})
                (answered if r.status_code == 200 else failures).append(r)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    r = httpx.post(url + "/admin/reload", headers={"X-API-Key": ADMIN_KEY}, timeout=120)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert r.status_code == 200 and r.json()["served"]["creditmix:sft"] == "sft/v0002"
    assert not failures and len(answered) > 4
    assert {a.json()["adapter"] for a in answered} <= {"sft/v0001", "sft/v0002"}
    assert answered[-1].json()["adapter"] == "sft/v0002"
    actions = [r for r in read_audit(server["settings"].audit_log) if r["route"] == "admin.reload"]
    assert actions and actions[-1]["served"]["creditmix:sft"] == "sft/v0002"  # admin actions are audited


def test_metrics_count_requests_and_latency_per_adapter(server):
    httpx.post(server["url"] + "/infer/base", json={"task": "creditmix", "input": "Num_of_Loan: 2"})
    text = httpx.get(server["url"] + "/metrics").text
    assert 'distill_slm_requests_total{route="/infer/{variant}",status="200"}' in text
    assert 'distill_slm_inference_seconds_count{adapter="base",task="creditmix",variant="base"}' in text
    assert "distill_slm_adapter_load_seconds{" in text and "process_resident_memory_bytes" in text


def test_concurrent_requests_are_batched(server):
    def one(i):
        return httpx.post(server["url"] + "/infer/sft", json={"task": "creditmix", "input": f"Num_of_Loan: {i % 10}"}, timeout=60)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(48)))
    assert all(a.status_code == 200 for a in answers)
    counts = batch_size_counts(server["url"], "creditmix", "sft")
    assert counts["+Inf"] > counts["1.0"]  # some forwards scored more than one request


def test_admin_promote_runs_the_gate(server):
    url, key = server["url"], {"X-API-Key": ADMIN_KEY}
    assert httpx.post(url + "/admin/promote", json={"task": "creditmix", "ref": "sft/v0001"}).status_code == 401
    r = httpx.post(url + "/admin/promote", json={"task": "creditmix", "ref": "sft/v9999"}, headers=key)
    assert r.status_code == 404 and "no version" in r.json()["error"]["message"]
    forced = {"task": "creditmix", "ref": "sft/v0002", "force": True}
    assert httpx.post(url + "/admin/promote", json=forced, headers=key, timeout=120).json()["passed"]
    # v0001 (macro_f1 0.6) is worse than production v0002 (0.7): the gate refuses unless forced
    r = httpx.post(url + "/admin/promote", json={"task": "creditmix", "ref": "sft/v0001"}, headers=key, timeout=120)
    assert r.status_code == 200 and not r.json()["passed"] and "does not beat" in r.json()["reasons"][-1]
    assert r.json()["served"] == {}
    r = httpx.post(url + "/admin/promote", json={"task": "creditmix", "ref": "sft/v0001", "force": True}, headers=key, timeout=120)
    assert r.status_code == 200 and r.json()["passed"] and r.json()["served"]["creditmix:sft"] == "sft/v0001"


def test_openai_contract_usage_limits_and_refusals(server):
    """Real token counts; max_tokens and stop honoured (finish_reason says which); temperature, n and unknown fields
    refused with a 422 naming the field; errors in OpenAI's shape, read by the official client."""
    from core.model.loading import load_tokenizer

    client = openai.OpenAI(base_url=server["url"] + "/v1", api_key="client-key")
    tokenizer = load_tokenizer(server["registry"].task_config("creditmix").model, ModelSettings())
    ask = [{"role": "user", "content": "Interest_Rate: 25"}]
    reply = client.chat.completions.create(model="creditmix:sft", messages=ask)
    label = reply.choices[0].message.content
    assert reply.usage.completion_tokens == len(tokenizer(label, add_special_tokens=False).input_ids)
    assert reply.usage.prompt_tokens > 10 and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    cut = client.chat.completions.create(model="creditmix:sft", messages=ask, stop=[label[1:]])
    assert cut.choices[0].message.content == label[:1] and cut.choices[0].finish_reason == "stop"
    # An extraction is decoded within max_tokens and closed early, so it still parses and validates; a budget under the
    # shortest valid answer is refused before decoding, naming the field.
    invoice = [{"role": "user", "content": "Invoice INV-1"}]
    short = client.chat.completions.create(model="invoices:sft", messages=invoice, max_tokens=70)
    assert short.usage.completion_tokens <= 70 and short.choices[0].finish_reason == "length"
    extra = short.model_extra["distill_slm"]
    assert json.loads(short.choices[0].message.content) and extra["schema_valid"] and extra["closed_early"]
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(model="invoices:sft", messages=invoice, max_tokens=3)
    assert refused.value.body["param"] == "max_tokens" and "shortest valid answer" in refused.value.body["message"]
    for bad, field in (({"temperature": 0.7}, "temperature"), ({"n": 2}, "n"), ({"extra_body": {"top_k": 5}}, "top_k")):
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            client.chat.completions.create(model="creditmix:sft", messages=ask, **bad)
        assert refused.value.body["param"] == field and field in refused.value.body["message"]
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="creditmix:nope", messages=ask)
    assert missing.value.body["type"] == "unknown_model" and "not served" in missing.value.body["message"]


def test_openai_client_reads_a_streamed_answer(server):
    client = openai.OpenAI(base_url=server["url"] + "/v1", api_key="client-key")
    ask = [{"role": "user", "content": "Interest_Rate: 25"}]
    whole = client.chat.completions.create(model="creditmix:sft", messages=ask)
    chunks = list(client.chat.completions.create(model="creditmix:sft", messages=ask, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_the_same_client_calls_its_old_fine_tuned_model_name(server):
    """Only the base URL changed: the client's `ft:` model name is served by the task's production adapter, listed in
    /v1/models, streamed or not."""
    client = openai.OpenAI(base_url=server["url"] + "/v1", api_key="client-key")
    assert FINE_TUNED in {m.id for m in client.models.list()}
    ask = [{"role": "user", "content": "Interest_Rate: 25"}]
    reply = client.chat.completions.create(model=FINE_TUNED, messages=ask)
    direct = client.chat.completions.create(model="creditmix:production", messages=ask)
    assert reply.model == FINE_TUNED and reply.choices[0].message.content == direct.choices[0].message.content
    assert reply.model_extra["distill_slm"]["adapter"] == direct.model_extra["distill_slm"]["adapter"]
    chunks = list(client.chat.completions.create(model=FINE_TUNED, messages=ask, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == direct.choices[0].message.content
