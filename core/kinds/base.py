"""The task-kind interface: everything that differs between task types, behind one base class.

A task kind is the one place that knows what is special about its task type: which fields a row
holds, how rows are split, which decoder a variant runs and how it is scored, how the teacher is
asked and read, which rows KD trains on, how preference pairs are built, what the reports and
summaries show, and how the service answers. Everything else (the flow, the Prefect tasks, the
evaluation loop, the trainers, the teacher backends, the serving runtime) calls through this
interface and never branches on the type.

A kind is bound to its task's config once (`core.kinds.for_config(cfg)`); no method takes the config again.
Required of every kind: `parse_record`, `decoder`, `score`, `write_report`. The rest come in parts with defaults
(rows: unstratified splits, a row's own fields as its record) or are optional (teaching: `teacher_task`,
`teacher_metrics`, `kd_rows`, `preference_pairs`; drift: `reference_answers`, `drift_view`, `agrees`,
`output_signals`; serving: `answer`), raising `NotImplementedError` naming kind and method where left out.

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
from core.common.splits import distinct_inputs, document_split
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

    def __init__(self, cfg: TaskConfig) -> None:
        self.cfg = cfg  # bound once (`core.kinds.for_config`): no method takes the config again

    def lacks(self, method: str) -> NotImplementedError:
        """The error for a part of the interface this kind does not implement (a toy kind with no teacher, say)."""
        return NotImplementedError(f"task type {self.type!r} does not implement {method}")

    # -- data --------------------------------------------------------------------------------
    @abstractmethod
    def parse_record(self, record: dict, path: Path, line: int, require_answer: bool) -> Example:
        """One row of a task file as an example; raise DataError naming path, line and field."""

    def check_rows(self, rows: list[Example], path: Path, require_answers: bool, lines: list[int]) -> None:
        """Refuse a file whose rows are each fine but together unusable, or whose checks are worth running together
        (`lines`: each row's line in the file)."""

    def to_record(self, row: Example) -> dict:
        """A row in the task's file format (what `load_rows` reads back)."""
        return row.to_dict()

    def split(self, rows: list[Example]) -> tuple[list[Example], list[Example]]:
        """(rows left for training, eval rows) out of one labeled set. Unstratified by default (documents, coding tasks);
        kinds with classes stratify."""
        d = self.cfg.data
        return document_split(rows, d.train_per_class, d.eval_per_class, self.cfg.training.seed, d.eval_fraction)

    def hold_out_validation(self, rows: list[Example], strict: bool = True) -> tuple[list[Example], list[Example]]:
        """(rows left for training, validation rows) out of training rows (`training.validation_per_class`; 0 = none).
        `strict` (kinds with classes): too few rows for that is an error naming how many are needed; else fewer are held
        out (teacher answers). By default the first rows, as many as `validation_per_class` (no classes to balance)."""
        n = self.cfg.training.validation_per_class
        return (rows[n:], rows[:n]) if n else (rows, [])

    def train_rows(self, rows: list[Example]) -> list[Example]:
        """The rows training runs on, out of the rows left for it: by default at most `data.train_per_class`; kinds with
        classes balance them."""
        return rows[: self.cfg.data.train_per_class]

    def splits(self, rows: list[Example], eval_rows: list[Example] | None = None) -> tuple[list[Example], list[Example], list[Example]]:
        """(train, validation, eval) rows: eval held out first (unless given), validation out of the rest, then the training rows."""
        if eval_rows is None:
            rows, eval_rows = self.split(rows)
        rows, validation = self.hold_out_validation(rows)
        return self.train_rows(rows), validation, eval_rows

    def load_rows(self, path: str | Path, require_answers: bool = True) -> list[Example]:
        """The task's rows from a JSONL/CSV file; bad rows stop here, naming file, line and field."""
        path = Path(path)
        numbered = nonempty_records(path)
        rows = [self.parse_record(record, path, number, require_answers) for number, record in numbered]
        self.check_rows(rows, path, require_answers, [number for number, _ in numbered])
        return rows

    def labeled_rows(self) -> tuple[list[Example], str]:
        """Every labeled row of the task (`data.train`, or its demo's) and where they came from."""
        if self.cfg.data.train is not None:
            return self.load_rows(self.cfg.data.train), str(self.cfg.data.train)
        demo, d = self.cfg.demo(), self.cfg.data.demo
        source = f"{demo.name} generator (n={d.n_rows}, seed={d.seed})"
        return self.rows_from_records(demo.generate(d.n_rows, d.seed), source), source

    def unlabeled_pool(
        self, held_out: list[Example] | None = None, first: list[Example] | None = None
    ) -> tuple[list[Example], dict[str, int]]:
        """The inputs the teacher answers: `first` (a retrain's drifted traffic), then `data.unlabeled`, or (demo) fresh
        demo rows without their answers; repeated inputs and inputs of `held_out` rows (validation, evaluation) dropped
        and counted, then at most `teacher.max_pool`."""
        limit = self.cfg.teacher.max_pool
        if first:
            rest = self.unlabeled_pool(held_out)[0] if (self.cfg.data.unlabeled is not None or self.cfg.data.train is None) else []
            rows, counts = distinct_inputs(first + rest, held_out or [])
            return (rows[:limit] if limit else rows), counts | {"from_traffic": len(first)}
        if self.cfg.data.unlabeled is not None:
            rows = self.load_rows(self.cfg.data.unlabeled, require_answers=False)
        elif self.cfg.data.train is None:
            d = self.cfg.data.demo
            rows = self.rows_from_records(self.cfg.demo().pool(limit or d.n_rows, d.seed + 1), "<demo pool>", require_answers=False)
        else:
            raise DataError("<config>", None, "data.unlabeled", f"methods {self.cfg.methods} need an unlabeled pool for the teacher")
        rows, counts = distinct_inputs(rows, held_out or [])
        return (rows[:limit] if limit else rows), counts

    def rows_from_records(self, records: list[dict], source: str, require_answers: bool = True) -> list[Example]:
        """Records in the task's file format (a demo's, say) as examples, checked as a file's rows are."""
        rows = [self.parse_record(record, Path(source), i, require_answers) for i, record in enumerate(records, start=1)]
        self.check_rows(rows, Path(source), require_answers, list(range(1, len(rows) + 1)))
        return rows

    def check_task(self) -> list[str]:
        """Problems with the task itself found before any data is read (raise), and warnings (returned).
        Kinds that override it call this first."""
        return []

    # -- model and evaluation ----------------------------------------------------------------
    @abstractmethod
    def decoder(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, adapter: str | Path | None = None):
        """The decoder a variant runs: the base model (`adapter` None) or the adapter saved in that folder (active on `model`)."""

    def warm_up(self, decoder) -> None:
        """Work done once per served variant before it takes requests."""

    @abstractmethod
    def score(self, decoder, rows: list[Example]) -> dict:
        """Metrics of one decoder on rows with gold answers (with `predictions`, latency and token counts)."""

    def validation_score(self, model, tokenizer, rows: list[Example]) -> float:
        """The primary metric of the model being trained (its adapter active) on validation rows."""
        metrics = self.score(self.decoder(model, tokenizer, adapter=TRAINING), rows)
        return metrics.get(self.cfg.promotion.primary_metric, metrics.get(self.summary_keys[0]))

    def score_variant(self, model, tokenizer, rows: list[Example], adapter: str | Path | None) -> dict:
        return self.score(self.decoder(model, tokenizer, adapter), rows)

    def evaluate(self, rows: list[Example], adapters: dict[str, str | Path], include_base: bool = True) -> dict[str, dict]:
        """The base model (optional) and each named adapter scored on the same rows."""
        return evaluate_variants(self.cfg, rows, adapters, self.score_variant, include_base)

    def teacher_metrics(self, rows: list[Example], traces: dict[str, dict]) -> dict:
        """The teacher scored like any variant, from its traces on the rows (failed answers count as wrong)."""
        raise self.lacks("teacher_metrics")

    def teacher_task(self) -> TeacherTask:
        """How the teacher backends ask, read and answer for this task type."""
        raise self.lacks("teacher_task")

    def check_teacher_answers(self, rows: list[Example], answers: list[TeacherAnswer]) -> list[TeacherAnswer]:
        """The teacher's answers to `rows` as they are stored: kinds whose answers can be checked against the row (codegen:
        its tests) keep only what passes and mark the rest failed, so no unchecked answer is trained on."""
        return answers

    @abstractmethod
    def write_report(self, results: dict[str, dict], out_dir: Path) -> Path:
        """`report.md` (and images) comparing the variants; return the report's path."""

    def card_line(self) -> str:
        return f"Task type {self.type}."

    # -- training ----------------------------------------------------------------------------
    def kd_rows(self, traces: list[dict]) -> tuple[list[dict], dict]:
        """KDTrainer rows from usable teacher traces, and counts worth logging."""
        raise self.lacks("kd_rows")

    def kd_labels(self) -> list[str] | None:
        """Labels whose distribution the KD loss matches (None: the top-k token term, where the tokenizers agree)."""
        return None

    def after_kd(self, adapter_dir: Path, traces: list[dict]) -> None:
        """Anything stored beside a freshly trained KD adapter."""

    def confident_rows(
        self, validation: list[Example], validation_traces: dict[str, dict], pool_traces: list[dict]
    ) -> tuple[list[Example], dict]:
        """Self-training: the labeler's pool answers confident enough to train on (a threshold chosen on its answers to the
        validation rows, `validation_traces` keyed by input hash), and a report of the choice. Only kinds that escalate
        (calibrated confidences) implement it; `core.methods.selftrain.check` refuses selftrain for the others."""
        raise NotImplementedError(f"{type(self).__name__} answers carry no confidence to select by")

    def pair_labels(self) -> list[str] | None:
        """The values a user's preference pair's sides must take (None: any text)."""
        return None

    def preference_pairs(self, rows: list[Example], decoder, teacher_traces: list[dict] | None) -> tuple[list[Pair], dict]:
        """On-policy DPO pairs (chosen: gold or teacher; rejected: the student's own wrong answer), and their counts."""
        raise self.lacks("preference_pairs")

    # -- drift -------------------------------------------------------------------------------
    def reference_rows(self) -> tuple[list[Example], str]:
        """Inputs of the task's own distribution for the drift reference, and where they came from: `data.unlabeled`,
        else (demo) fresh demo rows, else the eval file, else the eval split. Never training rows: the adapter is
        surer of those than of anything new, which would make every night look drifted."""
        n, seed = self.cfg.drift.reference_size, self.cfg.data.demo.seed
        if self.cfg.data.unlabeled is not None:
            rows, source = self.load_rows(self.cfg.data.unlabeled, require_answers=False), str(self.cfg.data.unlabeled)
        elif self.cfg.data.train is None:
            records = self.cfg.demo().pool(n, seed + 1000)  # seeds of its own: neither the training rows nor the teacher's pool
            rows, source = self.rows_from_records(records, "<demo reference>", require_answers=False), f"{self.cfg.demo().name} generator"
        elif self.cfg.data.eval is not None:
            rows, source = self.load_rows(self.cfg.data.eval), str(self.cfg.data.eval)
        else:
            rows, source = (
                self.split(self.labeled_rows()[0])[1],
                "the eval split (stratified, capped per class: label shares may differ from traffic's)",
            )
        rows = random.Random(seed).sample(rows, n) if len(rows) > n else rows
        return rows, source

    def reference_answers(self, decoder, texts: list[str]) -> list[dict]:
        """The decoder's answers to `texts` with the fields an audit record of the same answer holds."""
        raise self.lacks("reference_answers")

    def drift_view(self, record: dict) -> dict | None:
        """What output and confidence drift read from one answer (an audit record or a reference answer); None if unusable."""
        raise self.lacks("drift_view")

    def agrees(self, view: dict, teacher_output: str) -> bool:
        """Whether an answer (its drift view) says what the teacher said (a trace's `output`)."""
        raise self.lacks("agrees")

    def output_signals(self, reference: list[dict], window: list[dict]) -> list:
        """Tests (`core.drift.statistics.Signal`) of the window's answers against the reference's, from their drift views."""
        raise self.lacks("output_signals")

    # -- serving -----------------------------------------------------------------------------
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
        raise self.lacks("answer")


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
