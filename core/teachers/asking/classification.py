"""Classification asked of an endpoint: the reply is a label, its first token's alternatives a label distribution."""

from __future__ import annotations

import math

from core.common.prompts import parse_label
from core.teachers.base import EndpointTask, TeacherAnswer


class LabelAsking(EndpointTask):
    """A label per input, with the distribution the endpoint's first-token log-probabilities give."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels

    def request(self) -> dict:
        return {}

    def read_reply(self, content, top, latency_s, prompt_tokens, completion_tokens) -> TeacherAnswer:
        tokens = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        label = parse_label(content, self.labels)
        if label is None:
            return TeacherAnswer(None, latency_s=latency_s, error=f"answer outside the label set: {content[:80]!r}", **tokens)
        return TeacherAnswer(label, self._label_probs(label, top), top or None, latency_s, **tokens)

    def _label_probs(self, label: str, top: list) -> dict[str, float]:
        """The label distribution from the first answer token's alternatives; one-hot when there are none.

        An alternative counts for a label when the label starts with it ("Stand" -> "Standard").
        """
        mass = dict.fromkeys(self.labels, 0.0)
        for token, logprob in top[0] if top else []:
            piece = (token or "").strip().lower()
            if not piece or logprob is None:
                continue
            for candidate in self.labels:
                if candidate.lower().startswith(piece):
                    mass[candidate] += math.exp(logprob)
                    break
        total = sum(mass.values())
        if mass[label] == 0.0 or total == 0.0:
            return {c: float(c == label) for c in self.labels}
        return {c: v / total for c, v in mass.items()}
