"""What every teacher backend is, and what a task kind tells the backends about its task type.

A `Teacher` answers inputs (`answer(texts) -> list[TeacherAnswer]`); `concurrency` > 1 means
answers may be requested from several threads. A backend knows transport and cost (an HTTP
endpoint, a local model, retrieval and voting), never the task type: that comes in as a
`TeacherTask`, which each task kind (`core.kinds`) supplies — how to ask an endpoint and read its
reply, and how to answer with a local model, zero-shot or with retrieved demonstrations.

The endpoint half (`EndpointTask`: ask, read, combine, check) lives apart from the model half, in
`core.teachers.asking`, whose modules import no model code: a fan-out worker that asks an endpoint
(`core.teachers.fanout`) starts in well under a second instead of importing torch and transformers
(~9 s a process on this CPU, measured at stop 46).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # an endpoint teacher needs no transformers: seconds saved where traces are written
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.common.prompts import Shots
from core.common.rows import Example


@dataclass
class TeacherAnswer:
    output: str | None  # the answer as the student should learn it (a label, the JSON text); None when the teacher failed
    label_probs: dict[str, float] | None = None
    top_logprobs: list | None = None  # per completion token: [[token, logprob], ...] as the teacher gave them
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # why this answer cannot be used for training
    transient: bool = False  # the error was the transport's (timeouts, 429, 5xx), not the answer's: a rerun asks again
    extra: dict = field(default_factory=dict)


class EndpointTask(ABC):
    """The task type as an endpoint teacher sees it: what to ask and how to read the reply (`core.teachers.asking`)."""

    batch_size: int = 1  # inputs a local model answers per call
    candidates: int = 1  # answers an endpoint is asked per input (the first at temperature 0, the rest at `temperature`)
    temperature: float = 0.0

    def combine(self, answers: list[TeacherAnswer]) -> TeacherAnswer:
        """One answer out of an endpoint's `candidates` answers to the same input."""
        return answers[0]

    def check(self, rows: list[Example], answers: list[TeacherAnswer]) -> list[TeacherAnswer]:
        """The answers to `rows` as they are stored: task types whose answers can be checked against the row (codegen:
        its tests) keep only what passes and mark the rest failed, so no unchecked answer is trained on."""
        return answers

    @abstractmethod
    def request(self) -> dict:
        """Chat-completion fields this task type adds to every request (`max_tokens`, `response_format`, ...)."""

    @abstractmethod
    def read_reply(self, content: str, top: list, latency_s: float, prompt_tokens: int, completion_tokens: int) -> TeacherAnswer:
        """An endpoint's non-empty reply (and its per-token top log-probabilities) as an answer."""


class TeacherTask(EndpointTask):
    """The task type as every teacher backend sees it (each task kind's): the endpoint half and a local model's."""

    def endpoint(self) -> EndpointTask:
        """The endpoint half alone, from a module that imports no model code (`core.teachers.asking`): what a worker
        asking an endpoint is sent. It asks, reads and checks as this task does. A task whose class imports no model
        code is its own."""
        return self

    @abstractmethod
    def attach(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, calibrated: bool, adapter: Path | None = None) -> None:
        """Build the decoders a local backend answers with, on its loaded model (`calibrated`: the zero-shot decoder
        divides out the content-free prior; `adapter`: the folder of the adapter active on `model`, if any)."""

    @abstractmethod
    def answer(self, texts: list[str], top_k: int) -> list[TeacherAnswer]:
        """Zero-shot answers of the attached model."""

    @abstractmethod
    def deliberate(
        self, texts: list[str], shot_sets: list[list[Shots]], neighbours: list[list[tuple[Example, float]]], top_k: int
    ) -> list[TeacherAnswer]:
        """Answers with retrieved demonstrations: `shot_sets[i][v]` are the shots of vote v for input i,
        `neighbours[i]` the retrieved labeled rows with their similarity."""


class Teacher:
    """One labeling backend."""

    name = "teacher"
    concurrency = 1
    batch_size = 1

    def check(self) -> None:
        """Raise TeacherUnavailable if the teacher cannot answer at all."""

    def answer(self, texts: list[str]) -> list[TeacherAnswer]:
        raise NotImplementedError

    def answer_one(self, text: str) -> TeacherAnswer:
        return self.answer([text])[0]
