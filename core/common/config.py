"""Task configuration: one YAML file per task, validated by pydantic.

The same `TaskConfig` model is the `distill` flow's parameter, so the Prefect UI renders it as a
form. Every field has a default that runs the embedded demo; a user's YAML overrides what it names.

    name: creditmix
    type: classification
    labels: [Good, Standard, Bad]
    data: {train: data/train.jsonl, eval: data/eval.jsonl}
    training: {epochs: 1, learning_rate: 0.002}
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import demos
from core.errors import ConfigError


def _yaml_line(text: str, loc: tuple) -> int:
    """The 1-based line of the YAML node at `loc` (a pydantic error location), or of its nearest parent that exists."""
    node, line = yaml.compose(text), 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value if k.value == str(key)]
            if not found:
                break
            node, line = found[0][1], found[0][0].start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    base_model: str = Field(
        "embedded",
        description="'embedded' (SmolLM2-135M-Instruct), 'gemma3-270m' (Gemma 3 270M, from its PyPI part packages), "
        "a local HF folder, a .gguf file, or a hub id. The default: on one development task per kind Gemma scored as "
        "SmolLM2 did on classification and code, 0.026 higher on extraction, at 2.6-2.8x the CPU training time and 3.3x "
        "the peak memory (docs/training.md)",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="compute dtype; bf16 halves memory, fp32 is faster on CPUs without AVX-512"
    )
    quantization: Literal["none", "nf4"] = Field(
        "none", description="nf4 loads the base in 4-bit through bitsandbytes (QLoRA when training)"
    )
    cpu_offload: bool = Field(False, description="on GPU, let layers that do not fit live on the CPU")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")


class LoraSettings(_Strict):
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the LoRA branch")
    target_modules: list[str] | str = Field("all-linear", description="modules that get adapters")
    top_layers: int | None = Field(
        10, ge=1, description="adapters only on the last N decoder layers; the backward pass stops there (faster); None = all"
    )


class TrainingConfig(_Strict):
    epochs: float | None = Field(
        None, gt=0, description="passes over the (balanced) training split; None = the size rule: enough passes for min_steps"
    )
    min_steps: int = Field(500, ge=1, description="the size rule: passes until this many optimizer steps (at least 1, at most max_epochs)")
    max_epochs: float = Field(8.0, gt=0, description="the size rule's cap on passes over a small split")
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1 = use epochs)")
    validation_per_class: int | None = Field(
        None,
        ge=0,
        description="rows per class held out of the training rows to pick the best step and stop early, never more than a "
        "quarter of a class (0 = off). None: none of the labeled rows unless self-training runs (it picks its threshold on "
        "them: 20), and 20 of KD's traces (core.kinds.data.validation_per_class says why)",
    )
    eval_steps: int | None = Field(None, ge=1, description="validate every N steps (None = a tenth of the planned steps)")
    patience: int = Field(3, ge=1, description="stop after this many validations without improvement; the best adapter is kept")
    learning_rate: float = Field(2e-3, gt=0, description="peak learning rate (LoRA tolerates ~10x full fine-tuning)")
    batch_size: int = Field(8, ge=1, description="examples per device step")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    max_length: int = Field(256, ge=16, description="longest tokenized prompt+completion; longer rows are refused, not truncated")
    warmup_ratio: float = Field(0.05, ge=0, le=1, description="share of steps spent warming up the learning rate")
    save_steps: int = Field(50, ge=1, description="checkpoint every N steps so an interrupted run resumes")
    seed: int = Field(0, description="seed for data order and adapter init")
    cpu_autocast: Literal["auto", "bf16", "off"] = Field(
        "auto",
        description="on a CPU, compute in bf16 autocast (master weights stay fp32): 'auto' where this CPU multiplies bf16 "
        ">= 1.3x faster than fp32 (AMX, AVX512-BF16; 1.5x a training step here), 'off' pins fp32 (identical runs on any CPU)",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)


class CalibrationConfig(_Strict):
    enabled: bool = Field(True, description="divide out the label prior measured on content-free inputs")
    adapters: bool = Field(
        False,
        description=(
            "calibrate fine-tuned adapters too. Off by default: an adapter trained on balanced data has no label prior "
            "to remove, and content-free inputs lie outside what it was trained on, so their 'prior' only adds bias"
        ),
    )
    content_free_inputs: list[str] = Field(["N/A", "", "[MASK]"], description="inputs that carry no content (Zhao et al. 2021)")
    label_bias: dict[str, float] = Field(default_factory=dict, description="per-label offsets added in calibrated log space")


class DemoData(_Strict):
    generator: str | None = Field(None, description=f"demo generator, one of {sorted(demos.DEMOS)}; None = the task type's")
    n_rows: int = Field(4000, ge=30, description="rows generated before splitting")
    seed: int = Field(7, description="generator seed")

    @field_validator("generator")
    @classmethod
    def _known(cls, name: str | None) -> str | None:
        if name is not None:
            demos.get(name)  # KeyError -> a validation error naming the demos
        return name


class DataConfig(_Strict):
    train: Path | None = Field(
        None, description="labeled CSV/JSONL (classification: text, label; idp: document, target); absent = generate the demo data"
    )
    eval: Path | None = Field(None, description="labeled eval file; absent = split from train")
    unlabeled: Path | None = Field(None, description="unlabeled pool for the teacher")
    preferences: Path | None = Field(None, description="preference pairs (prompt, chosen, rejected JSONL) for DPO")
    openai_eval: Path | None = Field(
        None,
        description="an OpenAI eval imported by `distill-slm import evals` (its graders and items): its string_check and "
        "fuzzy_match graders run on every variant's answers to data.eval (the eval's rows) and are reported beside the metrics",
    )
    demo: DemoData = Field(default_factory=DemoData)
    train_per_class: int = Field(800, ge=1, description="training rows per class (minority classes are repeated); idp: training documents")
    eval_per_class: int = Field(60, ge=1, description="at most this many eval rows per class; idp: eval documents")
    eval_fraction: float = Field(
        0.2,
        ge=0.05,
        le=0.25,
        description="without a data.eval file, the share of each class (idp: of the documents) held out for evaluation, "
        "up to eval_per_class; at most a quarter, so a small file keeps most of its rows for training",
    )


class PromotionPolicy(_Strict):
    primary_metric: str = Field("macro_f1", description="metric the gate compares")
    min_gain: float = Field(0.0, description="candidate must beat production by at least this much")
    guard_min: dict[str, float] = Field(default_factory=lambda: {"min_class_recall": 0.5}, description="metric floors")
    guard_max: dict[str, float] = Field(default_factory=dict, description="metric ceilings, e.g. ece")


class Price(_Strict):
    prompt: float = Field(0.0, ge=0, description="USD per 1M prompt tokens")
    completion: float = Field(0.0, ge=0, description="USD per 1M completion tokens")


class TeacherConfig(_Strict):
    backend: Literal["deliberate", "hf", "openai"] = Field(
        "deliberate", description="'deliberate' (the base model, k-shot + voting), 'hf' (a local model), 'openai' (any compatible endpoint)"
    )
    model: str = Field("", description="hf: local folder or 'embedded'; openai: the model name the endpoint serves")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="openai: endpoint root, up to and including /v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: name of the environment variable holding the key")
    concurrency: int = Field(8, ge=1, description="openai: requests in flight at once")
    timeout_s: float = Field(60.0, gt=0, description="openai: per-request timeout")
    max_retries: int = Field(5, ge=0, description="openai: retries on 429, 5xx, timeouts and dropped connections")
    top_logprobs: int = Field(5, ge=0, le=20, description="openai: alternatives per token to request (0 = no logprobs)")
    k_shot: int = Field(4, ge=0, description="deliberate: retrieved labeled examples per prompt")
    votes: int = Field(2, ge=1, description="deliberate: self-consistency votes, each with its own disjoint set of shots")
    retrieval_weight: float = Field(
        0.5, ge=0, le=1, description="deliberate: share of the retrieved neighbours' label histogram in the answer (rest: the votes)"
    )
    candidates: int = Field(
        4,
        ge=1,
        description="codegen: answers asked per task (the first greedy, the rest sampled); only those that pass the "
        "task's tests are kept (execution-verified rejection sampling)",
    )
    from_sft: bool = Field(
        True,
        description="deliberate: when the run trains an SFT adapter, run it (k-shot + votes) instead of the base model: "
        "a teacher clearly better than the base, and the labeler of self-training",
    )
    max_pool: int | None = Field(
        2000,
        ge=1,
        description="label at most this many unlabeled rows (None = all). 2,000 keeps a pool of the usual 1,500 whole: KD from a "
        "strong teacher over 1,500 rows reached 0.878 macro-F1, still rising, where 120 gold rows per class gave 0.58",
    )
    prices: dict[str, Price] = Field(default_factory=dict, description="per-model token prices, keyed by model name")


class KDConfig(_Strict):
    kl_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="weight of the term matching the teacher's distribution (classification: its label probabilities; "
        "generation: its top-k token log-probabilities, when the tokenizers match); the rest is cross-entropy on its answer",
    )
    temperature: float = Field(1.0, gt=0, description="softening (>1) or sharpening (<1) of both distributions in that term")
    epochs: float | None = Field(None, gt=0, description="passes over the (balanced) traces; None = the size rule with kd.min_steps")
    min_steps: int = Field(
        1250,
        ge=1,
        description="KD's size rule: passes over the traces until this many optimizer steps (at most training.max_epochs). "
        "Larger than SFT's: a pool is larger, and KD from a strong teacher learns late (see core/training/recipe.py)",
    )


class SelfTrainingConfig(_Strict):
    min_precision: float = Field(
        0.9,
        gt=0,
        le=1,
        description="confidence threshold: the lowest at which the labeler's answers on the validation split are at least "
        "this precise; pool answers at or above it join the training data",
    )


class DPOSettings(_Strict):
    beta: float = Field(0.1, gt=0, description="how far the policy may move from the reference (higher = less)")
    loss_type: str = Field("sigmoid", description="TRL DPO loss: sigmoid (the DPO paper), ipo, hinge, robust, ...")
    from_sft: bool = Field(True, description="start from the SFT adapter of this run (SFT -> DPO); else from the base")
    max_pairs: int = Field(300, ge=1, description="automatically built pairs to train on at most")
    min_pairs: int = Field(8, ge=1, description="fewer usable pairs than this stop the run")
    learning_rate: float = Field(5e-5, gt=0, description="DPO moves a trained adapter: far smaller steps than SFT")
    epochs: float = Field(1.0, gt=0, description="passes over the pairs")


class CodegenSettings(_Strict):
    samples: int = Field(
        0, ge=0, description="evaluation: answers sampled per task for pass@k (0 = greedy pass@1 only; sampling costs n decodes a task)"
    )
    k: int = Field(2, ge=1, description="the k of pass@k (at most `samples`)")
    temperature: float = Field(0.8, gt=0, description="sampling temperature of pass@k samples, teacher candidates and DPO samples")
    timeout_s: float = Field(10.0, gt=0, description="wall-clock limit of one sandboxed test run")
    dpo_samples: int = Field(4, ge=2, description="DPO: the student's samples per task; a passing one is chosen, a failing one rejected")


class CostConfig(_Strict):
    compute_usd_per_hour: float = Field(
        0.10, ge=0, description="what an hour of the machine running local models costs; prices their latency per 1k requests"
    )


class EscalationConfig(_Strict):
    threshold: float = Field(0.6, ge=0, le=1, description="/infer/auto asks the teacher when the student's confidence is below this")
    report_thresholds: list[float] = Field([0.4, 0.5, 0.6, 0.7, 0.8, 0.9], description="thresholds in the cascade report")


class DriftConfig(_Strict):
    window_hours: float = Field(24.0, gt=0, description="the nightly run reads the audit log since its last run, at most this far back")
    min_requests: int = Field(
        50, ge=1, description="fewer requests of the task in the window: no verdict beyond ok, and the report says so"
    )
    sample_size: int = Field(500, ge=20, description="window inputs (a uniform reservoir sample) the input and confidence tests compare")
    reference_size: int = Field(
        500,
        ge=20,
        description="inputs of the task's own distribution the production adapter answers once as the reference: data.unlabeled, "
        "else fresh demo rows, else the eval rows (its training rows never: an adapter is surer of those)",
    )
    p_warn: float = Field(0.05, gt=0, lt=1, description="'warn' when a test's p-value, Bonferroni-corrected over the tests run, is below")
    p_drift: float = Field(0.01, gt=0, lt=1, description="'drift' (a retrain) when a corrected p-value is below this")
    permutations: int = Field(
        2000,
        ge=50,
        description="permutations behind the embedding and vocabulary tests' p-values; their smallest p-value is "
        "1/(permutations+1), which must stay under p_drift after the correction (x the number of tests)",
    )
    teacher_sample: int = Field(30, ge=0, description="window inputs the teacher answers to estimate agreement without labels (0 = none)")
    teacher_budget_usd: float = Field(1.0, ge=0, description="most the teacher's answers may cost per night (priced by teacher.prices)")


class ServiceLink(_Strict):
    url: str | None = Field(
        None, description="the service that serves this task (e.g. http://127.0.0.1:8080): after a promotion the flow reloads it"
    )
    replicas: list[str] = Field(
        default_factory=list,
        description="more replicas of that service over the same registry (their URLs): each is reloaded and checked too "
        "(replicas also follow the registry on their own, `registry_poll_s`); the same admin key",
    )
    admin_key_env: str = Field("DISTILL_SLM_ADMIN_KEY", description="name of the environment variable holding its admin API key")
    timeout_s: float = Field(300.0, gt=0, description="how long the reload (loading the new adapter) may take")


class ScaleConfig(_Strict):
    """Where independent work runs. `local` (the default) keeps everything in this process, as a laptop run does;
    `ray` or `dask` sends the teacher's pool to workers of a Ray cluster (`ray start --head` / KubeRay) or a Dask
    scheduler (`dask scheduler` + `dask worker`; dask-kubernetes, dask-jobqueue on Slurm), which answer it in
    shards while this process writes every answer to the trace cache as its shard returns, the evaluation's decoding
    to workers that answer its rows in shards, merged exactly (`core.evaluation.sharded`), and methods that need none
    of each other (`core.methods.waves`) to train side by side, each as a task on a worker (`flows.distill`). `train_processes` > 1 trains
    each method data-parallel under `accelerate launch` (`core.methods.launch`), whatever the runner."""

    runner: Literal["local", "ray", "dask"] = Field(
        "local", description="local: this process; ray | dask: the workers of a Ray cluster or a Dask scheduler (`address`)"
    )
    address: str | None = Field(
        None,
        description="the Ray cluster (`ray://host:10001`, `host:6379`, or `auto` for the one this machine joined) or the Dask "
        "scheduler (`tcp://host:8786`); None: a local one",
    )
    teacher_workers: int = Field(2, ge=1, description="workers answering the teacher's pool, each with its own teacher")
    eval_workers: int = Field(2, ge=1, description="workers decoding the eval rows in shards, each with its own copy of the base model")
    shard_size: int = Field(
        64, ge=1, description="inputs a worker answers before they are written: a worker that dies loses at most its shard"
    )
    worker_cpus: float = Field(
        1.0, gt=0, description="CPUs each worker reserves on a Ray cluster (Dask reserves none: each worker process runs its threads)"
    )
    worker_gpus: float = Field(
        0.0, ge=0, description="GPUs each worker reserves (a local model teacher on a GPU node; on Dask the worker resource `GPU`)"
    )
    method_gpus: float = Field(
        0.0,
        ge=0,
        description="GPUs each training method reserves when methods that need none of each other train side by side on a cluster "
        "(1: a GPU each; on Dask the worker resource `GPU`)",
    )
    train_processes: int = Field(
        1,
        ge=1,
        description="data-parallel processes each training runs in (`accelerate launch`, DDP: one per GPU; gloo on a CPU); "
        "the same optimizer steps over the same rows (each process takes batch_size / train_processes of every batch); 1: in "
        "this process",
    )
    accelerate_config: Path | None = Field(
        None,
        description="an accelerate config file (`accelerate config`) for data-parallel training, e.g. FSDP for a base too "
        "large for one GPU; None: plain DDP",
    )


# What a task file of each type starts from, beyond the field defaults: each kind's `defaults` (its own module in
# `core.kinds`), registered here by `register_task_type` when the kinds are imported. The kinds sit a layer above this
# module, so it never imports them: the first config validated loads the entry points of the group
# `distill_slm.task_kinds` (the package's own names `core.kinds`; another package may add task types the same way).
# `instruction` is used when the task brings its own data (labels or schema) and names no instruction; otherwise the
# type's demo's instruction applies.
TYPE_DEFAULTS: dict[str, dict] = {}
ENTRY_POINTS = "distill_slm.task_kinds"
_entry_points_loaded = False


def register_task_type(name: str, defaults: dict) -> None:
    """Make `type: <name>` a valid task type, starting from `defaults` (called by `core.kinds.register`)."""
    TYPE_DEFAULTS[name] = defaults


def task_types() -> dict[str, dict]:
    """Every registered task type and its defaults, loading the registered kinds on first use."""
    global _entry_points_loaded
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for entry in entry_points(group=ENTRY_POINTS):
            entry.load()  # importing a kinds module registers its types
    return TYPE_DEFAULTS


_DEMO = demos.for_type("classification")


NEED_REASONS = {
    "selftrain": "selftrain labels the pool with this run's SFT adapter",
    "dpo": "dpo.from_sft starts DPO from this run's SFT adapter",
    "kd": "kd's deliberate teacher runs this run's SFT adapter",
}
NEED_ESCAPES = {"dpo": " or set dpo.from_sft: false"}


class TaskConfig(_Strict):
    name: str = Field(
        _DEMO.name,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$",
        description="task name; registry folder (letters, digits, _ . -; not starting with a dot: no '..', no hidden folder)",
    )
    type: str = Field(
        "classification",
        description="task type: classification (labels), idp (document -> JSON), codegen (spec -> plan and Python code, checked by "
        "running tests), or one a package registers (`core.kinds.register`)",
    )
    labels: list[str] = Field(_DEMO.labels, min_length=2, description="classification: label set, in order")
    schema_file: Path | None = Field(None, description="idp: JSON Schema the output must validate against; absent = the invoices demo's")
    max_new_tokens: int = Field(
        320,
        ge=8,
        description="idp: most tokens generated per document (the schema should bound its output below this); codegen: per answer",
    )
    plan: bool = Field(True, description="codegen: answers are a one-line plan, then the code (plan-then-code); false: the code alone")
    instruction: str = Field(
        _DEMO.instruction,
        description="system message put before every input (default: the demo's, or the task type's for your own data)",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    methods: list[Literal["sft", "selftrain", "kd", "dpo"]] = Field(
        ["sft"],
        description="training methods to run: sft (gold labels), selftrain (gold plus the SFT adapter's confident labels "
        "of the unlabeled pool), kd (teacher traces), dpo (preference pairs)",
    )
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    kd: KDConfig = Field(default_factory=KDConfig)
    self_training: SelfTrainingConfig = Field(default_factory=SelfTrainingConfig)
    dpo: DPOSettings = Field(default_factory=DPOSettings)
    codegen: CodegenSettings = Field(default_factory=CodegenSettings)
    cost: CostConfig = Field(default_factory=CostConfig)
    escalation: EscalationConfig = Field(default_factory=EscalationConfig)
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    service: ServiceLink = Field(default_factory=ServiceLink)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)
    eval_batch_size: int = Field(16, ge=1, description="prompts scored per forward during evaluation")
    runs_dir: Path = Field(Path("runs"), description="adapter registry root")
    work_dir: Path = Field(Path("runs/.work"), description="scratch space: prepared data, checkpoints")

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in task_types():
            installed = (
                "" if TYPE_DEFAULTS else f" (none is registered: is distill-slm installed? its entry points {ENTRY_POINTS!r} load them)"
            )
            raise ValueError(f"unknown task type {value!r}; expected one of {sorted(TYPE_DEFAULTS)}{installed}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "TaskConfig":
        self._type_defaults()
        for method in self.methods:
            for need in self.needs(method):
                if need not in self.methods:
                    raise ValueError(f"{NEED_REASONS[method]}: add {need!r} to methods{NEED_ESCAPES.get(method, '')}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be distinct, got {self.labels}")
        if self.training.batch_size % self.scale.train_processes:
            raise ValueError(
                f"training.batch_size ({self.training.batch_size}) must divide by scale.train_processes "
                f"({self.scale.train_processes}): each process takes an equal share of every batch"
            )
        for label in self.calibration.label_bias:
            if label not in self.labels:
                raise ValueError(f"calibration.label_bias names {label!r}, which is not in labels {self.labels}")
        return self

    def needs(self, method: str) -> tuple[str, ...]:
        """The methods whose adapters `method` starts from or labels with, trained before it in the same run: the one
        place these dependencies are declared (the validator refuses a need missing from `methods`; `core.methods`
        orders the run by them)."""
        if method == "selftrain":
            return ("sft",)
        if method == "dpo" and self.dpo.from_sft:
            return ("sft",)
        if method == "kd" and self.teacher.backend == "deliberate" and self.teacher.from_sft and "sft" in self.methods:
            return ("sft",)  # the embedded teacher runs this run's SFT adapter where labeled data trained one
        return ()

    def uses_pool(self) -> bool:
        """Whether a method of this run asks a teacher (or the SFT labeler) about the unlabeled pool."""
        return bool({"kd", "selftrain"} & set(self.methods))

    def _type_defaults(self) -> None:
        """The task type's defaults for every field the task file did not name."""
        defaults, named = task_types()[self.type], self.model_fields_set
        demo = demos.get(self.data.demo.generator) if self.data.demo.generator else demos.find(self.type)
        if "name" not in named and demo is not None:
            self.name = demo.name
        if demo is None:
            own_data = True
        else:
            own_data = (self.labels != demo.labels) if demo.labels is not None else (self.schema_file is not None)
        # A config saved by another type's defaults carries the classification demo's instruction: replace it too.
        if "instruction" not in named or (self.instruction == _DEMO.instruction and demo is not _DEMO):
            self.instruction = (
                defaults.get("instruction", self.instruction).format(labels=", ".join(self.labels)) if own_data else demo.instruction
            )
            if "instruction_without_plan" in defaults:  # the answer format is the `plan` switch's, whoever's data it is
                self.instruction = defaults["instruction" if self.plan else "instruction_without_plan"]
        if "methods" not in named and self.data.unlabeled is not None:
            # A pool the task file names is used: the SFT adapter's confident labels of it (classification) and, with a
            # teacher named, KD from that teacher; the gate promotes whichever the evaluation prefers, the report states
            # each gain over SFT, zero included. (KD from a strong teacher over a 1,500-row pool reached 0.878 on a task
            # where 120 gold rows per class gave 0.58: the pool is the lever on small data.)
            self.methods = ["sft", *defaults.get("pool_methods", []), *(["kd"] if "teacher" in named else [])]
        if "promotion" not in named and "promotion" in defaults:
            self.promotion = PromotionPolicy(**defaults["promotion"])
        for section, settings in (("training", self.training), ("data", self.data), ("demo", self.data.demo)):
            for key, value in defaults.get(section, {}).items():
                if key not in settings.model_fields_set:
                    setattr(settings, key, value)

    def demo(self) -> demos.Demo:
        """The demo that supplies data this task file does not name (and its defaults)."""
        return demos.get(self.data.demo.generator) if self.data.demo.generator else demos.for_type(self.type)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TaskConfig":
        """Load and validate a YAML task file; errors name the file and the field."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        try:
            cfg = cls.model_validate(raw)
        except ValidationError as exc:
            text = path.read_text(encoding="utf-8")
            lines = [
                f"{path}:{_yaml_line(text, e['loc'])}: field {'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()
            ]
            raise ConfigError("\n".join(lines)) from None
        # Relative data paths are relative to the YAML file, not to wherever the command runs.
        for key in ("train", "eval", "unlabeled", "preferences"):
            value = getattr(cfg.data, key)
            if value is not None and not value.is_absolute():
                setattr(cfg.data, key, (path.parent / value).resolve())
        if cfg.schema_file is not None and not cfg.schema_file.is_absolute():
            cfg.schema_file = (path.parent / cfg.schema_file).resolve()
        return cfg
