"""The task-kind interface: everything that differs between task types, behind one small base class.

A task kind is the one place that knows what is special about its task type: which fields a row
holds, how rows are split, which decoder a variant runs and how it is scored, how the teacher is
asked and read, which rows KD trains on, how preference pairs are built, what the reports and
summaries show, and how the service answers. Everything else (the flow, the Prefect tasks, the
evaluation loop, the trainers, the teacher backends, the serving runtime) calls through this
interface and never branches on the type.

Adding a task type = one module with a `TaskKind` subclass, registered in `core/kinds/__init__.py`
(and its defaults in `core.common.config.TYPE_DEFAULTS`).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.common.config import TaskConfig
from core.common.files import nonempty_records
from core.common.rows import Example, Pair, text_sha256
from core.common.splits import distinct_inputs
from core.errors import DataError
from core.evaluation.evaluate import evaluate_variants
from core.teachers.base import TeacherAnswer, TeacherTask

TRAINING = "<training>"  # `decoder(..., adapter=TRAINING)`: the adapter being trained, scored as saved adapters are


@dataclass
class ServedAnswer:
    """One answer of the service, whatever the task type; the routes turn it into their response shapes."""

    task: str
    variant: str  # as requested: base | sft | kd | dpo | auto
    adapter: str  # 'base', 'method/version', or (escalated) the teacher's name
    output: str  # the label, or the extracted JSON as text
    output_json: dict | None = None
    schema_valid: bool | None = None
    schema_errors: list[str] | None = None
    schema_unenforced: list[str] | None = None
    label_probs: dict[str, float] | None = None
    confidence: float | None = None
    margin: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tier: str = "student"
    escalation_error: str | None = None
    request_id: str = ""
    latency_ms: float = 0.0
    finish_reason: str = "stop"  # "length" when a token budget cut the answer (or, idp, closed it early)
    closed_early: bool | None = None  # idp: the budget ran short and the answer was closed with its shortest valid ending
    verdict: dict | None = None  # codegen with the request's tests: the sandboxed run's {passed, cause, error, isolation}
    gate: str | None = None  # how the served version got there: 'passed' its gate or 'forced'; None for the base model
    student: dict | None = None  # auto, escalated: the student's own answer (adapter, output, confidence), for drift


class TaskKind(ABC):
    type: ClassVar[str]  # the task file's `type`
    summary_keys: ClassVar[tuple[str, ...]]  # metrics in the flow's summary
    card_keys: ClassVar[tuple[str, ...]]  # metrics in the model card
    escalates: ClassVar[bool] = False  # answers carry a calibrated confidence: cascade report, /infer/auto
    generates: ClassVar[bool] = False  # answers are decoded token by token (the service's fast decode path applies)
    accepts: ClassVar[frozenset[str]] = frozenset()  # request fields it takes besides the input: json_schema, tests
    hf_task: ClassVar[str] = "text-generation"  # the Hugging Face task type the model card's metrics are filed under

    # -- data --------------------------------------------------------------------------------
    @abstractmethod
    def parse_record(self, cfg: TaskConfig, record: dict, path: Path, line: int, require_answer: bool) -> Example:
        """One row of a task file as an example; raise DataError naming path, line and field."""

    def check_rows(self, cfg: TaskConfig, rows: list[Example], path: Path, require_answers: bool, lines: list[int]) -> None:
        """Refuse a file whose rows are each fine but together unusable, or whose checks are worth running together
        (`lines`: each row's line in the file)."""

    @abstractmethod
    def to_record(self, cfg: TaskConfig, row: Example) -> dict:
        """A row in the task's file format (what `load_rows` reads back)."""

    @abstractmethod
    def split(self, cfg: TaskConfig, rows: list[Example]) -> tuple[list[Example], list[Example]]:
        """(rows left for training, eval rows) out of one labeled set."""

    @abstractmethod
    def hold_out_validation(self, cfg: TaskConfig, rows: list[Example], strict: bool = True) -> tuple[list[Example], list[Example]]:
        """(rows left for training, validation rows) out of training rows (`training.validation_per_class`; 0 = none).
        `strict`: too few rows for that is an error naming how many are needed; else fewer are held out (teacher answers)."""

    @abstractmethod
    def train_rows(self, cfg: TaskConfig, rows: list[Example]) -> list[Example]:
        """The rows training runs on, out of the rows left for it (balanced, or limited)."""

    def splits(
        self, cfg: TaskConfig, rows: list[Example], eval_rows: list[Example] | None = None
    ) -> tuple[list[Example], list[Example], list[Example]]:
        """(train, validation, eval) rows: eval held out first (unless given), validation out of the rest, then the training rows."""
        if eval_rows is None:
            rows, eval_rows = self.split(cfg, rows)
        rows, validation = self.hold_out_validation(cfg, rows)
        return self.train_rows(cfg, rows), validation, eval_rows

    def load_rows(self, cfg: TaskConfig, path: str | Path, require_answers: bool = True) -> list[Example]:
        """The task's rows from a JSONL/CSV file; bad rows stop here, naming file, line and field."""
        path = Path(path)
        numbered = nonempty_records(path)
        rows = [self.parse_record(cfg, record, path, number, require_answers) for number, record in numbered]
        self.check_rows(cfg, rows, path, require_answers, [number for number, _ in numbered])
        return rows

    def labeled_rows(self, cfg: TaskConfig) -> tuple[list[Example], str]:
        """Every labeled row of the task (`data.train`, or its demo's) and where they came from."""
        if cfg.data.train is not None:
            return self.load_rows(cfg, cfg.data.train), str(cfg.data.train)
        demo, d = cfg.demo(), cfg.data.demo
        source = f"{demo.name} generator (n={d.n_rows}, seed={d.seed})"
        return self.rows_from_records(cfg, demo.generate(d.n_rows, d.seed), source), source

    def unlabeled_pool(
        self, cfg: TaskConfig, held_out: list[Example] | None = None, first: list[Example] | None = None
    ) -> tuple[list[Example], dict[str, int]]:
        """The inputs the teacher answers: `first` (a retrain's drifted traffic), then `data.unlabeled`, or (demo) fresh
        demo rows without their answers; repeated inputs and inputs of `held_out` rows (validation, evaluation) dropped
        and counted, then at most `teacher.max_pool`."""
        limit = cfg.teacher.max_pool
        if first:
            rest = self.unlabeled_pool(cfg, held_out)[0] if (cfg.data.unlabeled is not None or cfg.data.train is None) else []
            rows, counts = distinct_inputs(first + rest, held_out or [])
            return (rows[:limit] if limit else rows), counts | {"from_traffic": len(first)}
        if cfg.data.unlabeled is not None:
            rows = self.load_rows(cfg, cfg.data.unlabeled, require_answers=False)
        elif cfg.data.train is None:
            d = cfg.data.demo
            rows = self.rows_from_records(cfg, cfg.demo().pool(limit or d.n_rows, d.seed + 1), "<demo pool>", require_answers=False)
        else:
            raise DataError("<config>", None, "data.unlabeled", f"methods {cfg.methods} need an unlabeled pool for the teacher")
        rows, counts = distinct_inputs(rows, held_out or [])
        return (rows[:limit] if limit else rows), counts

    def rows_from_records(self, cfg: TaskConfig, records: list[dict], source: str, require_answers: bool = True) -> list[Example]:
        """Records in the task's file format (a demo's, say) as examples, checked as a file's rows are."""
        rows = [self.parse_record(cfg, record, Path(source), i, require_answers) for i, record in enumerate(records, start=1)]
        self.check_rows(cfg, rows, Path(source), require_answers, list(range(1, len(rows) + 1)))
        return rows

    def check_task(self, cfg: TaskConfig) -> list[str]:
        """Problems with the task itself found before any data is read (raise), and warnings (returned).
        Kinds that override it call this first."""
        return []

    # -- model and evaluation ----------------------------------------------------------------
    @abstractmethod
    def decoder(self, cfg: TaskConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, adapter: str | Path | None = None):
        """The decoder a variant runs: the base model (`adapter` None) or the adapter saved in that folder (active on `model`)."""

    def warm_up(self, decoder) -> None:
        """Work done once per served variant before it takes requests."""

    @abstractmethod
    def score(self, cfg: TaskConfig, decoder, rows: list[Example]) -> dict:
        """Metrics of one decoder on rows with gold answers (with `predictions`, latency and token counts)."""

    def validation_score(self, cfg: TaskConfig, model, tokenizer, rows: list[Example]) -> float:
        """The primary metric of the model being trained (its adapter active) on validation rows."""
        metrics = self.score(cfg, self.decoder(cfg, model, tokenizer, adapter=TRAINING), rows)
        return metrics.get(cfg.promotion.primary_metric, metrics.get(self.summary_keys[0]))

    def score_variant(self, cfg: TaskConfig, model, tokenizer, rows: list[Example], adapter: str | Path | None) -> dict:
        return self.score(cfg, self.decoder(cfg, model, tokenizer, adapter), rows)

    def evaluate(self, cfg: TaskConfig, rows: list[Example], adapters: dict[str, str | Path], include_base: bool = True) -> dict[str, dict]:
        """The base model (optional) and each named adapter scored on the same rows."""
        return evaluate_variants(cfg, rows, adapters, self.score_variant, include_base)

    @abstractmethod
    def teacher_metrics(self, cfg: TaskConfig, rows: list[Example], traces: dict[str, dict]) -> dict:
        """The teacher scored like any variant, from its traces on the rows (failed answers count as wrong)."""

    @abstractmethod
    def teacher_task(self, cfg: TaskConfig) -> TeacherTask:
        """How the teacher backends ask, read and answer for this task type."""

    def check_teacher_answers(self, cfg: TaskConfig, rows: list[Example], answers: list[TeacherAnswer]) -> list[TeacherAnswer]:
        """The teacher's answers to `rows` as they are stored: kinds whose answers can be checked against the row (codegen:
        its tests) keep only what passes and mark the rest failed, so no unchecked answer is trained on."""
        return answers

    @abstractmethod
    def write_report(self, task: str, results: dict[str, dict], out_dir: Path) -> Path:
        """`report.md` (and images) comparing the variants; return the report's path."""

    def card_line(self, cfg: TaskConfig) -> str:
        return f"Task type {self.type}."

    # -- training ----------------------------------------------------------------------------
    @abstractmethod
    def kd_rows(self, cfg: TaskConfig, traces: list[dict]) -> tuple[list[dict], dict]:
        """KDTrainer rows from usable teacher traces, and counts worth logging."""

    def kd_labels(self, cfg: TaskConfig) -> list[str] | None:
        """Labels whose distribution the KD loss matches (None: the top-k token term, where the tokenizers agree)."""
        return None

    def after_kd(self, cfg: TaskConfig, adapter_dir: Path, traces: list[dict]) -> None:
        """Anything stored beside a freshly trained KD adapter."""

    def confident_rows(
        self, cfg: TaskConfig, validation: list[Example], validation_traces: dict[str, dict], pool_traces: list[dict]
    ) -> tuple[list[Example], dict]:
        """Self-training: the labeler's pool answers confident enough to train on (a threshold chosen on its answers to the
        validation rows, `validation_traces` keyed by input hash), and a report of the choice. Only kinds that escalate
        (calibrated confidences) implement it; `core.methods.selftrain.check` refuses selftrain for the others."""
        raise NotImplementedError(f"{type(self).__name__} answers carry no confidence to select by")

    def pair_labels(self, cfg: TaskConfig) -> list[str] | None:
        """The values a user's preference pair's sides must take (None: any text)."""
        return None

    @abstractmethod
    def preference_pairs(self, cfg: TaskConfig, rows: list[Example], decoder, teacher_traces: list[dict] | None) -> tuple[list[Pair], dict]:
        """On-policy DPO pairs (chosen: gold or teacher; rejected: the student's own wrong answer), and their counts."""

    # -- drift -------------------------------------------------------------------------------
    def reference_rows(self, cfg: TaskConfig) -> tuple[list[Example], str]:
        """Inputs of the task's own distribution for the drift reference, and where they came from: `data.unlabeled`,
        else (demo) fresh demo rows, else the eval file, else the eval split. Never training rows: the adapter is
        surer of those than of anything new, which would make every night look drifted."""
        n, seed = cfg.drift.reference_size, cfg.data.demo.seed
        if cfg.data.unlabeled is not None:
            rows, source = self.load_rows(cfg, cfg.data.unlabeled, require_answers=False), str(cfg.data.unlabeled)
        elif cfg.data.train is None:
            records = cfg.demo().pool(n, seed + 1000)  # seeds of its own: neither the training rows nor the teacher's pool
            rows, source = self.rows_from_records(cfg, records, "<demo reference>", require_answers=False), f"{cfg.demo().name} generator"
        elif cfg.data.eval is not None:
            rows, source = self.load_rows(cfg, cfg.data.eval), str(cfg.data.eval)
        else:
            rows, source = (
                self.split(cfg, self.labeled_rows(cfg)[0])[1],
                "the eval split (stratified, capped per class: label shares may differ from traffic's)",
            )
        rows = random.Random(seed).sample(rows, n) if len(rows) > n else rows
        return rows, source

    @abstractmethod
    def reference_answers(self, cfg: TaskConfig, decoder, texts: list[str]) -> list[dict]:
        """The decoder's answers to `texts` with the fields an audit record of the same answer holds."""

    @abstractmethod
    def drift_view(self, cfg: TaskConfig, record: dict) -> dict | None:
        """What output and confidence drift read from one answer (an audit record or a reference answer); None if unusable."""

    @abstractmethod
    def agrees(self, cfg: TaskConfig, view: dict, teacher_output: str) -> bool:
        """Whether an answer (its drift view) says what the teacher said (a trace's `output`)."""

    @abstractmethod
    def output_signals(self, cfg: TaskConfig, reference: list[dict], window: list[dict]) -> list:
        """Tests (`core.drift.statistics.Signal`) of the window's answers against the reference's, from their drift views."""

    # -- serving -----------------------------------------------------------------------------
    @abstractmethod
    def answer(
        self,
        engine,
        batcher,
        task: str,
        variant: str,
        text: str,
        json_schema: dict | None,
        max_schema_bytes: int,
        max_new_tokens: int | None = None,
        tests: str | None = None,
    ) -> ServedAnswer:
        """One request answered by the served variant (`engine` and `batcher` from `core.serving`); generating kinds
        decode within `max_new_tokens` (a client's budget), where given; `tests` (codegen) are run against the answer
        in the sandbox. A field the kind does not list in `accepts` never reaches it (the runtime refuses it)."""


def traces_for_rows(rows: list[Example], traces: dict[str, dict]) -> list[dict]:
    """The teacher's trace of each row's input; every row must have one."""
    found = [traces.get(text_sha256(r.text)) for r in rows]
    if any(t is None for t in found):
        raise DataError("<teacher traces>", None, None, f"{sum(t is None for t in found)} eval rows have no teacher trace")
    return found


def trace_costs(found: list[dict], failed: int, note: str) -> dict:
    """The teacher's name, failures and token counts per request, from its traces."""
    return {
        "teacher": found[0]["teacher"],
        "failed": failed,
        "latency_note": note,
        "prompt_tokens_per_request": float(np.mean([t["prompt_tokens"] for t in found])),
        "completion_tokens_per_request": float(np.mean([t["completion_tokens"] for t in found])),
    }
