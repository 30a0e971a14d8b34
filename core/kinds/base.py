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

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.common.config import TaskConfig
from core.common.rows import Example, Pair, text_sha256
from core.common.splits import document_split
from core.errors import DataError
from core.teachers.base import TeacherAnswer, TeacherTask


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

    @classmethod
    def of(cls, served, variant: str, **fields) -> ServedAnswer:
        """An answer by `served` (the serving engine's variant that answered: its task, version and gate) to a request
        for `variant`."""
        return cls(task=served.task, variant=variant, adapter=served.ref, gate=served.gate, **fields)


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

    def _lacks(self, method: str) -> NotImplementedError:
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

    def check_task(self) -> list[str]:
        """Problems with the task itself found before any data is read (raise), and warnings (returned).
        Kinds that override it call this first."""
        return []

    # -- model and evaluation ----------------------------------------------------------------
    @abstractmethod
    def decoder(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, adapter: str | Path | None = None):
        """The decoder a variant runs: the base model (`adapter` None) or the adapter saved in that folder (active on `model`)."""

    @abstractmethod
    def score(self, decoder, rows: list[Example]) -> dict:
        """Metrics of one decoder on rows with gold answers (with `predictions`, latency and token counts)."""

    def teacher_metrics(self, rows: list[Example], traces: dict[str, dict]) -> dict:
        """The teacher scored like any variant, from its traces on the rows (failed answers count as wrong)."""
        raise self._lacks("teacher_metrics")

    def teacher_task(self) -> TeacherTask:
        """How the teacher backends ask, read and answer for this task type."""
        raise self._lacks("teacher_task")

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
        raise self._lacks("kd_rows")

    def label_set(self) -> list[str] | None:
        """The closed set every answer is one of (classification's labels), or None for free text: KD then matches the
        teacher's distribution over these (else its top-k tokens, where the tokenizers agree), and a user's preference
        pair's sides must be among them."""
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

    def preference_pairs(self, rows: list[Example], decoder, teacher_traces: list[dict] | None) -> tuple[list[Pair], dict]:
        """On-policy DPO pairs (chosen: gold or teacher; rejected: the student's own wrong answer), and their counts."""
        raise self._lacks("preference_pairs")

    # -- drift -------------------------------------------------------------------------------
    def reference_answers(self, decoder, texts: list[str]) -> list[dict]:
        """The decoder's answers to `texts` with the fields an audit record of the same answer holds."""
        raise self._lacks("reference_answers")

    def drift_view(self, record: dict) -> dict | None:
        """What output and confidence drift read from one answer (an audit record or a reference answer); None if unusable."""
        raise self._lacks("drift_view")

    def agrees(self, view: dict, teacher_output: str) -> bool:
        """Whether an answer (its drift view) says what the teacher said (a trace's `output`)."""
        raise self._lacks("agrees")

    def output_signals(self, reference: list[dict], window: list[dict]) -> list:
        """Tests (`core.drift.statistics.Signal`) of the window's answers against the reference's, from their drift views."""
        raise self._lacks("output_signals")

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
        raise self._lacks("answer")


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
