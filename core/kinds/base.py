"""The task-kind interface: everything that differs between task types, behind one base class.

A task kind is the one place that knows what is special about its task type: which fields a row
holds and how rows are checked, which decoder a variant runs and how it is scored, how the teacher is
asked and read, which rows KD trains on, how preference pairs are built, what the reports and
summaries show, and what drift reads from an answer. Everything else (the flow, the Prefect tasks, the
evaluation loop, the trainers, the teacher backends, the serving runtime) calls through this
interface and never branches on the type.

A kind is bound to its task's config and the operator's model settings once (`core.kinds.for_config(cfg, settings)`);
no method takes either again.
Required of every kind: `parse_records`, `decoder`, `score`, `write_report`. The rest come with defaults (a row's own
fields as its record, no task checks) or are optional parts (teaching: `teacher_task`, `teacher_metrics`, `kd_rows`,
`confident_rows`, `preference_pairs`; paired comparisons: `resampled_primary`; drift: `reference_answers`, `drift_view`, `agrees`, `output_signals`), raising
`NotImplementedError` naming kind and method where left out. What a kind only declares is a class attribute
(`closed_labels`: splits stratify and KD matches label distributions; `accepts`: request fields; `escalates`).
What is the same for every kind is not here: data and splits (`core.kinds.data`), scoring loops
(`core.evaluation.evaluate`), answering a request (`core.serving.answers`, by the decoder's `answers`).

Adding a task type = one module with a `TaskKind` subclass (its `defaults` included) and one registration line
(`register(...)` in `core/kinds/__init__.py`, or, from another package, an entry point in the group
`distill_slm.task_kinds` naming a module that calls `core.kinds.register`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.common.config import TaskConfig
from core.common.rows import Example, Pair, text_sha256
from core.errors import DataError
from core.settings import ModelSettings
from core.teachers.base import TeacherTask


class TaskKind(ABC):
    type: ClassVar[str]  # the task file's `type`
    summary_keys: ClassVar[tuple[str, ...]]  # metrics in the flow's summary
    card_keys: ClassVar[tuple[str, ...]]  # metrics in the model card
    escalates: ClassVar[bool] = False  # answers carry a calibrated confidence: cascade report, /infer/auto
    generates: ClassVar[bool] = False  # answers are decoded token by token (the service's fast decode path applies)
    accepts: ClassVar[frozenset[str]] = frozenset()  # request fields it takes besides the input: json_schema, tests
    hf_task: ClassVar[str] = "text-generation"  # the Hugging Face task type the model card's metrics are filed under
    # Answers are one of the task's `labels`: splits stratify by label and balance the training rows, KD matches the
    # teacher's distribution over the labels, a preference pair's sides must be labels (`core.kinds.data`).
    closed_labels: ClassVar[bool] = False
    card_note: ClassVar[str] = ""  # what the model card says about the answers beyond the task type and labels
    # What a task file of this type starts from beyond the config's field defaults (`core.common.config.task_types`):
    # sections or fields as the task file writes them, and `instruction` (`{labels}` filled in) for a task's own data.
    defaults: ClassVar[dict] = {}

    def __init__(self, cfg: TaskConfig, settings: ModelSettings) -> None:
        # Bound once (`core.kinds.for_config`): no method takes the config again. `settings` are the operator's (where
        # models live, the sandbox, schema limits), built by the entry point from its environment, never the task file's.
        self.cfg, self.settings = cfg, settings

    def _lacks(self, method: str) -> NotImplementedError:
        """The error for a part of the interface this kind does not implement (a toy kind with no teacher, say)."""
        return NotImplementedError(f"task type {self.type!r} does not implement {method}")

    # -- data --------------------------------------------------------------------------------
    @abstractmethod
    def parse_records(self, records: list[tuple[int, dict]], path: Path, require_answers: bool) -> list[Example]:
        """The rows of one file (`records`: each with its line number) as examples, checked one by one and together;
        raise DataError naming path, line and field. `require_answers`: every row must hold its gold answer."""

    def to_record(self, row: Example) -> dict:
        """A row in the task's file format (what `parse_records` reads back)."""
        return row.to_dict()

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

    def resampled_primary(self, rows: list[Example], metrics: dict, picks: np.ndarray) -> np.ndarray | None:
        """The promotion's primary metric of one variant (`metrics`, as `score` returned them on `rows`) on each resample
        of the rows (`picks`: resamples x rows, indices into `rows`), for paired comparisons between variants
        (`core.evaluation.paired`); None where this kind cannot recompute that metric from its predictions."""
        return None

    def teacher_metrics(self, rows: list[Example], traces: dict[str, dict]) -> dict:
        """The teacher scored like any variant, from its traces on the rows (failed answers count as wrong)."""
        raise self._lacks("teacher_metrics")

    def teacher_task(self) -> TeacherTask:
        """How the teacher backends ask, read and answer for this task type."""
        raise self._lacks("teacher_task")

    @abstractmethod
    def write_report(self, results: dict[str, dict], out_dir: Path) -> Path:
        """`report.md` (and images) comparing the variants; return the report's path."""

    # -- training ----------------------------------------------------------------------------
    def kd_rows(self, traces: list[dict]) -> tuple[list[dict], dict]:
        """KDTrainer rows from usable teacher traces, and counts worth logging."""
        raise self._lacks("kd_rows")

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
