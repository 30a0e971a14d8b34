"""The inference engine: one base model, every registered task's adapters loaded beside it.

A request names a task and a variant (`base`, or a method such as `sft`); the engine switches the
active PEFT adapter (no weights are reloaded) and scores the labels. `reload()` loads whatever
the registry's aliases now point at under new adapter names, precomputes their calibration
priors, swaps the routing table in one assignment under the lock, then deletes the adapters
nothing points at any more: a request sees the old adapter or the new one, never half of one.

    engine = InferenceEngine("runs", ModelSettings())
    engine.load()
    variant, [pred] = engine.classify("creditmix", "sft", ["Num_Bank_Accounts: 3; ..."])
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TypeVar

from core.common.config import ModelConfig, TaskConfig
from core.errors import ConfigError, RegistryError, UnknownVariant
from core.kinds import TaskKind, for_config, task_teacher
from core.model.calibrated import Prediction
from core.model.decoders import Decoder
from core.model.fast_decode import drop_merged, enable_fast_decode, merge_for_decode, merged_adapter
from core.model.loading import load_adapter, load_model
from core.model.schema import Extraction, SchemaDecoder, TaskSchema, compile_grammar
from core.registry import Registry
from core.serving.deadline import wait
from core.settings import ModelSettings
from core.teachers.base import Teacher

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class Variant:
    task: str
    name: str  # base | a method (sft, selftrain, kd, dpo) | an alias (production, staging)
    ref: str  # 'base' or 'method/version'
    adapter: str | None  # PEFT adapter name inside the shared model; None = base weights only
    decoder: Decoder  # the task kind's: calibrated labels, schema-constrained JSON or plan-then-code
    loaded_at: float
    gate: str | None = None  # 'passed' or 'forced' (how this version got to be served); None for the base model


class ModelThread:
    """Runs every forward pass on one native thread.

    CPU kernels parallelise through OpenMP, whose thread team belongs to the calling thread: forwards from
    several request threads keep several teams alive, and their spinning workers compete for the cores.
    Measured: a 576x1536 fp16 matrix-vector product took 0.039 ms, and 0.088 ms once another live thread had
    run one; extraction over HTTP decoded at 34 tokens/s instead of 61. The engine's lock serialises forwards
    anyway, so one thread for all of them costs no concurrency.
    """

    def __init__(self) -> None:
        self._ident: int | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="distill-slm-model", initializer=self._mark)

    def _mark(self) -> None:
        self._ident = threading.get_ident()

    def __call__(self, fn: Callable[..., T], *args) -> T:
        """`fn(*args)` on the model thread; a request's work queued there is dropped if its deadline passes or its
        caller goes away first (`core.serving.deadline`)."""
        if threading.get_ident() == self._ident:
            return fn(*args)
        return wait(self._pool.submit(fn, *args))

    def close(self) -> None:
        """End the thread (and its OpenMP team, which would otherwise slow the next engine in this process)."""
        self._pool.shutdown(wait=True)


class InferenceEngine:
    def __init__(
        self,
        runs_dir: str,
        settings: ModelSettings,
        model_cfg: ModelConfig | None = None,
        schema_compile_s: float | None = None,
        fast_decode: str = "off",
    ) -> None:
        self.registry = Registry(runs_dir)
        self.settings = settings  # the operator's: where models live, the sandbox, schema limits
        self.model_cfg = model_cfg
        self.fast_decode = fast_decode  # which 16-bit decode copies generation runs on: auto | off | fp16 | bf16 | fp16+bf16
        self.fast_decode_on = False  # set up once a generating task is served (classification never decodes)
        self.on_model_thread = ModelThread()
        self.schema_compile_s = schema_compile_s  # budget for compiling a request's own JSON Schema (None: no limit)
        self.lock = threading.RLock()  # one forward at a time; reload swaps under it
        self._reload_lock = threading.Lock()
        self.reload_pending = threading.Event()
        self.model = None
        self.tokenizer = None
        self.configs: dict[str, TaskConfig] = {}
        self.kinds: dict[str, TaskKind] = {}  # each served task's kind, bound to its config once per (re)load
        self.variants: dict[tuple[str, str], Variant] = {}
        self.adapter_load_s: dict[str, float] = {}
        self.teachers: dict[str, Teacher] = {}
        self._teacher_lock = threading.Lock()
        self.skipped: dict[str, str] = {}  # task -> why it is not served (a folder without a readable version)

    def close(self) -> None:
        self.on_model_thread.close()

    @property
    def loaded(self) -> bool:
        """Whether the engine can answer: its base model is loaded."""
        return self.model is not None

    def task_config(self, task: str) -> TaskConfig:
        return self.registry.task_config(task)

    def _task_configs(self) -> dict[str, TaskConfig]:
        """Every servable task's config. A task folder that cannot be read (no version yet: a first registration that
        failed or was killed) is skipped with a warning and named in `skipped` (and /readyz): the others are served."""
        configs, skipped = {}, {}
        for task in self.registry.tasks():
            try:
                configs[task] = self.task_config(task)
            except (RegistryError, ConfigError, OSError) as exc:
                skipped[task] = str(exc)
                if self.skipped.get(task) != str(exc):
                    log.warning("not serving task %s: %s", task, exc)
        self.skipped = skipped
        return configs

    def _wanted(self, tasks: list[str]) -> dict[tuple[str, str], str]:
        """(task, variant) -> 'method/version': each alias exactly the version it names; each method production's version
        when production is that method, else its newest version that passed the gate or was forced (none: not served)."""
        wanted = {}
        for task in tasks:
            aliases = self.registry.aliases(task)
            for alias, ref in aliases.items():
                wanted[(task, alias)] = ref
            production = aliases.get("production", "")
            for method in self.registry.methods(task):
                ref = production if production.startswith(method + "/") else self.registry.newest_servable(task, method)
                if ref is not None:
                    wanted[(task, method)] = ref
        return wanted

    @contextlib.contextmanager
    def _active(self, variant: Variant):
        if variant.adapter is None:
            with self.model.disable_adapter() if hasattr(self.model, "peft_config") else contextlib.nullcontext():
                yield
        else:
            if self.model.active_adapter != variant.adapter:  # set_adapter walks every module (2.6 ms): once per switch,
                self.model.set_adapter(variant.adapter)  # not on every step of a continuous batch
            with merged_adapter(self.model, variant.adapter):  # its fast decode steps use its merged copy, if any
                yield

    def load(self) -> None:
        """Load the base model once, then every task's adapters (on the model thread: see `ModelThread`)."""
        self.on_model_thread(self._load)

    def _load(self) -> None:
        self.configs = self._task_configs()
        self.kinds = {task: for_config(cfg, self.settings) for task, cfg in self.configs.items()}
        model_cfg = self.model_cfg or (next(iter(self.configs.values())).model if self.configs else ModelConfig())
        self.model, self.tokenizer = load_model(model_cfg, self.settings)
        self.reload()

    def reload(self) -> dict[str, str]:
        """Bring the served adapters in line with the registry; return {task:variant: ref}.

        All of it runs on the model thread, between requests' forwards: attaching an adapter walks every LoRA layer
        (PEFT's `inject_adapter` calls `set_adapter`), which must never happen while a forward on another adapter runs.
        Requests queue meanwhile (their lanes are bounded) and are answered right after, by the old variant or the new.
        """
        self.reload_pending.set()
        with self._reload_lock:  # one reload at a time, none while a continuous batch runs (`versions_held`)
            self.reload_pending.clear()
            return self.on_model_thread(self._reload)

    def _reload(self) -> dict[str, str]:
        configs = self._task_configs()
        wanted = self._wanted(list(configs))
        loaded = {(v.task, v.ref): v for v in self.variants.values() if v.adapter}
        attached: dict[tuple[str, str], str] = {}
        for (task, _), ref in wanted.items():
            if (task, ref) in loaded or (task, ref) in attached:
                continue
            name = f"{task}__{ref}".replace("/", "__").replace(".", "_")  # torch module names: no dots
            start = time.perf_counter()
            with self.lock:
                if hasattr(self.model, "peft_config"):
                    load_adapter(self.model, self.registry.root / task / ref, name=name)
                else:  # the first adapter wraps the model in a new object
                    self.model = load_adapter(self.model, self.registry.root / task / ref, name=name)
            self.adapter_load_s[name] = time.perf_counter() - start
            attached[(task, ref)] = name
        kinds = {task: for_config(cfg, self.settings) for task, cfg in configs.items()}
        if self.fast_decode != "off" and not self.fast_decode_on and any(kind.generates for kind in kinds.values()):
            self.on_model_thread(self._enable_fast_decode)
        merged = set()  # production of a generating task decodes on a merged copy (nothing uses it until routed)
        for (task, variant), ref in wanted.items():
            name = attached.get((task, ref)) or (loaded[(task, ref)].adapter if (task, ref) in loaded else None)
            if self.fast_decode_on and variant == "production" and kinds[task].generates and name:
                if name in getattr(self.model, "decode_merged", ()) or self.on_model_thread(merge_for_decode, self.model, name):
                    merged.add(name)
        return self.on_model_thread(self._swap_in, kinds, wanted, loaded, attached, merged)

    def _swap_in(self, kinds: dict, wanted: dict, loaded: dict, attached: dict, merged: set) -> dict[str, str]:
        """Warm up the new variants, swap the routing table, drop what nothing names (under the lock)."""
        with self.lock:
            table, stale = self._swap_table(kinds, wanted, loaded, attached)
            for adapter in set(getattr(self.model, "decode_merged", ())) - merged:  # under the lock: a decode may use it
                drop_merged(self.model, adapter)
            for adapter in stale:
                self.model.delete_adapter(adapter)
                self.adapter_load_s.pop(adapter, None)
        return {f"{task}:{name}": v.ref for (task, name), v in table.items()}

    def _swap_table(self, kinds: dict, wanted: dict, loaded: dict, attached: dict) -> tuple[dict, set[str]]:
        """The new variants built and warmed up, the routing table swapped in one assignment (the caller holds the lock);
        returns the table and the adapters nothing names any more."""
        configs = {task: kind.cfg for task, kind in kinds.items()}
        previous, self.configs, self.kinds = self.configs, configs, kinds
        for (task, ref), name in attached.items():
            loaded[(task, ref)] = self._variant(task, "", ref, name)
        table = {
            (task, variant): replace(loaded[(task, ref)], name=variant, gate=self.registry.verdict(task, ref))
            for (task, variant), ref in wanted.items()
        }
        for task, cfg in configs.items():
            old = self.variants.get((task, "base"))
            # The base decoder (and its content-free prior) is kept unless its config or the model object changed.
            reuse = old is not None and previous.get(task) == cfg and getattr(old.decoder, "model", None) is self.model
            table[(task, "base")] = old if reuse else self._variant(task, "base", "base", None)
        stale = {v.adapter for v in self.variants.values() if v.adapter} - {v.adapter for v in table.values() if v.adapter}
        self.variants = table
        return table, stale

    def _enable_fast_decode(self) -> None:
        with self.lock:  # it swaps layer classes: not while a forward runs
            self.fast_decode_on = enable_fast_decode(self.model, self.fast_decode)

    @property
    def decode_path(self) -> str:
        """The decode copies in force ('fp32' when none): what /readyz and /metrics report."""
        dtypes = sorted(
            str(d).removeprefix("torch.").replace("bfloat16", "bf16").replace("float16", "fp16")
            for d in getattr(self.model, "decode_dtypes", ())
        )
        return "+".join(dtypes) if self.fast_decode_on and dtypes else "fp32"

    def _variant(self, task: str, name: str, ref: str, adapter: str | None) -> Variant:
        decoder = self.kinds[task].decoder(self.model, self.tokenizer, adapter=None if adapter is None else self.registry.path(task, ref))
        variant = Variant(task, name, ref, adapter, decoder, time.time())

        def warm_up() -> None:
            with self._active(variant):
                decoder.warm_up()  # before the variant is routable

        self.on_model_thread(warm_up)
        return variant

    def served(self) -> list[Variant]:
        return list(self.variants.values())

    def get(self, task: str, name: str) -> Variant:
        variant = self.variants.get((task, name))
        if variant is None:
            served = sorted(f"{t}:{n}" for t, n in self.variants)
            raise UnknownVariant(f"{task}:{name} is not served; served: {served}")
        return variant

    def student(self, task: str) -> str:
        """The variant `auto` answers with: production, else the first of kd, selftrain, sft, dpo served."""
        for name in ("production", "kd", "selftrain", "sft", "dpo"):
            if (task, name) in self.variants:
                return name
        raise UnknownVariant(f"{task}:auto needs a trained adapter; served: {sorted(f'{t}:{n}' for t, n in self.variants)}")

    def teacher(self, task: str) -> Teacher:
        """The task's teacher backend, built on first escalation (a deliberate teacher loads its own model)."""
        with self._teacher_lock:
            if task not in self.teachers:
                cfg = self.configs[task]
                self.teachers[task] = task_teacher(cfg, self.settings)
            return self.teachers[task]

    def classify(self, task: str, name: str, texts: list[str]) -> tuple[Variant, list[Prediction]]:
        return self.on_model_thread(self._classify, task, name, texts)

    def _classify(self, task: str, name: str, texts: list[str]) -> tuple[Variant, list[Prediction]]:
        with self.lock:
            variant = self._classifier(task, name)
            with self._active(variant):
                return variant, variant.decoder.predict(texts)

    def _classifier(self, task: str, name: str) -> Variant:
        variant = self.get(task, name)
        if variant.decoder.answers != "labels":
            raise UnknownVariant(f"{task} is a document-extraction task: it has no labels to score")
        return variant

    def classify_in_chunks(self, task: str, name: str, text: str, chunk_tokens: int) -> tuple[Variant, Prediction]:
        """One long input, its prefill run `chunk_tokens` at a time with the lock released between steps.

        A 1,024-token prefill holds the model for about a second on 2 CPU cores; in steps, other requests'
        forwards run between them. A reload that swaps the variant mid-way restarts the input on the new one.
        """
        state, start = {"served": None, "steps": None}, time.perf_counter()

        def step():
            with self.lock:
                variant = self._classifier(task, name)
                if variant is not state["served"]:
                    state["served"], state["steps"] = variant, variant.decoder.chunked_log_likelihoods(text, chunk_tokens)
                with self._active(state["served"]):
                    return next(state["steps"])

        while True:
            scores = self.on_model_thread(step)  # requests queued meanwhile run before the next step
            if scores is not None:
                return state["served"], state["served"].decoder.predictions(scores, (time.perf_counter() - start) * 1000)[0]
            time.sleep(0.001)

    def prepare_schema(self, task: str, name: str, schema: TaskSchema | None) -> None:
        """Compile a request's own schema for `task:name` within `schema_compile_s` (SchemaError past it); compiled
        grammars are kept by schema. Call it before `extract`, outside the lock, so a slow schema holds no other request."""
        if schema is not None and (decoder := self.get(task, name).decoder).answers == "json" and schema.sha256 != decoder.schema.sha256:
            compile_grammar(self.tokenizer, decoder.vocab_size, schema, self.schema_compile_s)

    def extract(
        self,
        task: str,
        name: str,
        documents: list[str],
        schema: TaskSchema | None = None,
        max_new_tokens: int | None = None,
        on_token: Callable[[int, int], bool] | None = None,
    ) -> tuple[Variant, list[Extraction]]:
        """Documents -> JSON with an idp task's variant, decoded as one batch, under the task's schema or a request's own,
        within `max_new_tokens` (at most the task's; answers still validate, closed early where the budget ran short);
        `on_token(document index, token)` sees the tokens as they are decoded (streaming)."""
        self.prepare_schema(task, name, schema)
        return self.on_model_thread(self._extract, task, name, documents, schema, max_new_tokens, on_token)

    def _extract(
        self,
        task: str,
        name: str,
        documents: list[str],
        schema: TaskSchema | None,
        max_new_tokens: int | None,
        on_token: Callable[[int, int], bool] | None,
    ) -> tuple[Variant, list[Extraction]]:
        with self.lock:
            variant, decoder = self.extraction_decoder(task, name, schema)
            with self._active(variant):
                return variant, decoder.extract(documents, max_new_tokens=max_new_tokens, batch_size=len(documents), on_token=on_token)

    def extraction_decoder(self, task: str, name: str, schema: TaskSchema | None) -> tuple[Variant, SchemaDecoder]:
        """The served variant of an idp task and its decoder under the task's schema or a request's own (compiled
        grammars are kept by schema: `prepare_schema`)."""
        return self.schema_decoder(self.get(task, name), schema)

    def schema_decoder(self, variant: Variant, schema: TaskSchema | None) -> tuple[Variant, SchemaDecoder]:
        """`variant`'s decoder under its task's schema or a request's own."""
        task, decoder = variant.task, variant.decoder
        if decoder.answers != "json":
            raise UnknownVariant(f"{task} is a classification task: send it to classify")
        if schema is not None and schema.sha256 != decoder.schema.sha256:
            decoder = SchemaDecoder(decoder.model, self.tokenizer, schema, decoder.instruction, decoder.max_new_tokens, decoder.batch_size)
        return variant, decoder

    def run_with(self, variant: Variant, fn: Callable[..., T], *args) -> T:
        """`fn(*args)` on the model thread, under the lock, with `variant`'s adapter active (a continuous batch's steps)."""

        def run() -> T:
            with self.lock, self._active(variant):
                return fn(*args)

        return self.on_model_thread(run)

    @contextlib.contextmanager
    def versions_held(self):
        """While held, no reload swaps the served versions (a continuous batch's rows keep the adapter they started on);
        `reload_pending` says a reload is waiting, so the holder stops taking new rows and lets go soon."""
        with self._reload_lock:
            yield

    def decode(self, task: str, name: str, run: Callable[[object], T]) -> tuple[Variant, T]:
        """`run(decoder)` with a variant's decoder on the model thread, under the lock, its adapter active (codegen)."""
        return self.on_model_thread(self._decode, task, name, run)

    def _decode(self, task: str, name: str, run: Callable[[object], T]) -> tuple[Variant, T]:
        with self.lock:
            variant = self.get(task, name)
            with self._active(variant):
                return variant, run(variant.decoder)
