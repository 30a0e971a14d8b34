"""What drift compares: the production adapter's answers to inputs of the task's distribution (`Reference`), and the
audit log's records of the task since the last run (`Window`, streamed once: exact counts and a fixed-size uniform
sample, so memory does not grow with the log)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Reference:
    """The production adapter's answers to inputs of the task's distribution, and what evaluation measured."""

    ref: str  # method/version
    source: str  # where the inputs came from
    inputs: list[str]
    views: list[dict]  # the kind's drift view of each answer (label, confidence, validity, ...)
    eval_metrics: dict  # the registered metrics (accuracy, teacher_agreement, ...)


class Window:
    """One pass over the audit records of a window: exact counts, and a uniform sample (reservoir) of the task's requests."""

    def __init__(
        self,
        task: str,
        production: str,
        view: Callable[[dict], dict | None],
        sample_size: int,
        registered: set[str] | None = None,
        seed: int = 0,
    ) -> None:
        self.task, self.production, self.view, self.registered = task, production, view, registered
        self.sample_size = sample_size
        self.rng = random.Random(seed)
        self.requests = 0  # answered requests of the task (any variant): the input signals
        self.answered = 0  # of those, answered by the production version (or escalated from it): the output signals
        self.escalated = 0
        self.skipped: Counter = Counter()
        self.errors = 0  # refused requests (4xx) naming the task
        self.redacted = 0
        self.inputs: list[str] = []  # reservoir over requests
        self.answers: list[tuple[str | None, dict]] = []  # reservoir over production answers: (input, view)
        self.first_at: float | None = None
        self.last_at: float | None = None

    def observe(self, record: dict) -> None:
        if record.get("task") != self.task:
            return
        if record.get("status") or record.get("error"):
            self.errors += 1
            return
        if "output" not in record:
            return  # an admin action
        at = record.get("at")
        self.first_at = at if self.first_at is None else min(self.first_at, at)
        self.last_at = at if self.last_at is None else max(self.last_at, at)
        text = record.get("input")
        if not isinstance(text, str):
            self.redacted += 1
            text = None
        self.requests += 1
        if text is not None:
            _reservoir(self.inputs, text, self.requests - self.redacted, self.sample_size, self.rng)
        student = record.get("student") or record  # escalated: the student's own answer was kept beside the teacher's
        adapter = student.get("adapter")
        if adapter != self.production:
            if adapter not in ("base", None) and self.registered is not None and adapter not in self.registered:
                self.skipped["adapter no longer registered (output signals)"] += 1
            return
        view = self.view(student)
        if view is None:
            self.skipped["answer without the fields drift needs"] += 1
            return
        self.answered += 1
        self.escalated += record.get("tier") == "teacher"
        _reservoir(self.answers, (text, view), self.answered, self.sample_size, self.rng)


def _reservoir(sample: list, item, seen: int, size: int, rng: random.Random) -> None:
    """Algorithm R: after `seen` items, `sample` is a uniform draw of min(seen, size) of them."""
    if len(sample) < size:
        sample.append(item)
    else:
        j = rng.randrange(seen)
        if j < size:
            sample[j] = item
