"""Document extraction through the running service: /infer with the task's schema or the request's own."""

import json
import threading
import time

import httpx
import pytest
from openai import OpenAI, UnprocessableEntityError

from core.model.schema import TaskSchema
from core.serving.audit import read_audit
from demos import invoices
from tests.conftest import SCHEMA_COMPILE_S, batch_size_counts

DOC = invoices.generate(1, seed=5)[0]["document"]
OWN_SCHEMA = {
    "type": "object",
    "properties": {"vendor": {"type": "string", "maxLength": 20}, "paid": {"type": "boolean"}},
    "required": ["vendor", "paid"],
}


def test_extraction_validates_against_the_task_schema(server):
    r = httpx.post(f"{server['url']}/infer/sft", json={"task": "invoices", "input": DOC}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["adapter"] == "sft/v0001" and body["schema_valid"] and body["schema_errors"] == []
    assert json.loads(body["output"]) == body["output_json"]
    assert not TaskSchema.from_dict(invoices.SCHEMA).errors(body["output_json"])
    base = httpx.post(f"{server['url']}/infer/base", json={"task": "invoices", "input": DOC}, timeout=120).json()
    assert base["adapter"] == "base" and base["schema_valid"]


def test_a_request_may_carry_its_own_schema(server):
    r = httpx.post(f"{server['url']}/infer/sft", json={"task": "invoices", "input": DOC, "json_schema": OWN_SCHEMA}, timeout=120)
    assert r.status_code == 200, r.text
    assert set(r.json()["output_json"]) == {"vendor", "paid"} and r.json()["schema_valid"]
    unique = {
        "type": "object",
        "properties": {"tags": {"type": "array", "maxItems": 2, "uniqueItems": True, "items": {"enum": ["a", "b"]}}},
        "required": ["tags"],
    }
    r = httpx.post(f"{server['url']}/infer/sft", json={"task": "invoices", "input": DOC, "json_schema": unique}, timeout=120)
    assert r.status_code == 200 and r.json()["schema_unenforced"] == ["/properties/tags/uniqueItems"]
    # What the grammar let through is still validated: a repeated tag would show up as a schema error.
    assert r.json()["schema_valid"] == (len(set(r.json()["output_json"]["tags"])) == len(r.json()["output_json"]["tags"]))


def test_bad_request_schemas_get_a_422_naming_the_pointer(server):
    url = f"{server['url']}/infer/sft"
    outside = {"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}}
    r = httpx.post(url, json={"task": "invoices", "input": DOC, "json_schema": outside}, timeout=60)
    assert r.status_code == 422 and "json_schema/properties/a/$ref" in r.json()["error"]["message"]
    huge = {"type": "object", "properties": {f"f{i}": {"type": "string", "description": "x" * 200} for i in range(400)}}
    r = httpx.post(url, json={"task": "invoices", "input": DOC, "json_schema": huge}, timeout=60)
    assert r.status_code in (413, 422) and "limit" in r.json()["error"]["message"]
    r = httpx.post(url, json={"task": "creditmix", "input": "x", "json_schema": OWN_SCHEMA}, timeout=60)
    assert r.status_code == 422 and "idp" in r.json()["error"]["message"]
    assert httpx.get(f"{server['url']}/healthz").status_code == 200


def test_openai_client_gets_json_content(server):
    client = OpenAI(base_url=f"{server['url']}/v1", api_key="any")
    reply = client.chat.completions.create(model="invoices:sft", messages=[{"role": "user", "content": DOC}])
    extracted = json.loads(reply.choices[0].message.content)
    assert not TaskSchema.from_dict(invoices.SCHEMA).errors(extracted) and reply.usage.completion_tokens > 0


def _slow_schema(tiny_model_dir, budget_s: float) -> dict:
    """A schema that takes this machine at least 4x `budget_s` to compile, slow by construction: nested counted
    repetition in a string `pattern` makes XGrammar build a large automaton (~0.8 s a field on one CPU). One such
    field is timed first here, with the tokenizer the service compiles with, and the field count scaled from it.
    The fields are optional, so the shortest answer ({}) fits any budget."""
    import math

    from transformers import AutoTokenizer

    from core.model.schema import compile_grammar

    def schema(count: int, first: int = 0) -> dict:
        fields = {f"f{i}": {"type": "string", "pattern": f"^([a-z0-9]{{1,{40 + i}}}-){{1,20}}$"} for i in range(first, first + count)}
        return {"type": "object", "properties": fields}

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    compile_grammar(tokenizer, len(tokenizer), TaskSchema.from_dict({"type": "object"}))  # the compiler's own start-up
    start = time.perf_counter()
    compile_grammar(tokenizer, len(tokenizer), TaskSchema.from_dict(schema(1, first=100)))
    per_field = time.perf_counter() - start
    return schema(min(40, max(2, math.ceil(4 * budget_s / per_field))))


def test_a_schema_slow_to_compile_is_refused_while_other_requests_are_answered(server, tiny_model_dir):
    """A schema that compiles for several times the service's budget (0.5 s) is refused; others are answered meanwhile."""
    slow = _slow_schema(tiny_model_dir, SCHEMA_COMPILE_S)
    refused = {}

    def send_slow() -> None:
        start = time.perf_counter()
        r = httpx.post(f"{server['url']}/infer/base", json={"task": "invoices", "input": DOC, "json_schema": slow}, timeout=60)
        refused.update(status=r.status_code, error=r.json()["error"], seconds=time.perf_counter() - start)

    sender = threading.Thread(target=send_slow)
    sender.start()
    others = []
    while sender.is_alive():  # short requests keep being answered while the schema compiles
        start = time.perf_counter()
        r = httpx.post(f"{server['url']}/infer/base", json={"task": "creditmix", "input": "Interest_Rate: 3"}, timeout=60)
        others.append((r.status_code, time.perf_counter() - start))
    sender.join()
    assert refused["status"] == 422 and refused["error"]["param"] == "json_schema", refused
    assert "schema_compile_s" in refused["error"]["message"] and refused["seconds"] < 2 * SCHEMA_COMPILE_S + 2
    assert others and all(status == 200 for status, _ in others)
    assert max(seconds for _, seconds in others) < SCHEMA_COMPILE_S, others


def test_concurrent_extraction_requests_share_decode_steps(server):
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        body = {"task": "invoices", "input": f"INVOICE INV-{i:04d} from Acme Ltd, total 12.50 EUR"}
        return httpx.post(f"{server['url']}/infer/sft", json=body, timeout=120)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(one, range(6)))
    assert all(a.status_code == 200 and a.json()["schema_valid"] for a in answers), [a.text for a in answers]
    counts = batch_size_counts(server["url"], "invoices", "sft")
    assert counts["+Inf"] > counts["1.0"]  # some decodes answered more than one request


def test_a_streamed_extraction_comes_token_by_token_and_is_the_same_answer(server):
    client = OpenAI(base_url=server["url"] + "/v1", api_key="client-key")
    ask = [{"role": "user", "content": DOC}]
    whole = client.chat.completions.create(model="invoices:sft", messages=ask)
    chunks = list(client.chat.completions.create(model="invoices:sft", messages=ask, stream=True, stream_options={"include_usage": True}))
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(content) == whole.choices[0].message.content and len(content) > 10  # one chunk per token or so
    assert len({c.id for c in chunks}) == 1 and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    [finish] = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish.choices[0].finish_reason == whole.choices[0].finish_reason
    assert finish.model_extra["distill_slm"]["schema_valid"] == whole.model_extra["distill_slm"]["schema_valid"]
    # Refused before its first token, a streamed request gets its error status, not a stream.
    with pytest.raises(UnprocessableEntityError) as refused:
        client.chat.completions.create(model="invoices:sft", messages=ask, stream=True, max_tokens=3)
    assert refused.value.body["param"] == "max_tokens"


def test_a_client_that_goes_away_stops_its_decode(server):
    """The client reads its first piece of text and hangs up: the decode ends there (the audit records the answer cut
    short), instead of running to the end of a 200-token budget for nobody."""
    client = OpenAI(base_url=server["url"] + "/v1", api_key="client-key")
    ask = [{"role": "user", "content": DOC}]
    whole = client.chat.completions.create(model="invoices:sft", messages=ask)
    body = {"model": "invoices:sft", "messages": ask, "stream": True}
    with httpx.stream("POST", server["url"] + "/v1/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            chunk = json.loads(line[6:]) if line.startswith("data: {") else {}
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                request_id = chunk["id"]
                break  # leaving the block closes the connection
    deadline = time.monotonic() + 30
    while not (records := [x for x in read_audit(server["settings"].audit_log) if x.get("request_id") == request_id]):
        assert time.monotonic() < deadline, "the cut answer was never audited"
        time.sleep(0.2)
    assert records[0]["completion_tokens"] < whole.usage.completion_tokens / 2
