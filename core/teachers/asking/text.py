"""Free text asked of an endpoint: the reply, as written, is the answer."""

from __future__ import annotations

from core.teachers.base import EndpointTask, TeacherAnswer


class TextAsking(EndpointTask):
    """The teacher's reply within `max_new_tokens`."""

    def __init__(self, max_new_tokens: int) -> None:
        self.max_new_tokens = max_new_tokens

    def request(self) -> dict:
        return {"max_tokens": self.max_new_tokens}

    def read_reply(self, content, top, latency_s, prompt_tokens, completion_tokens) -> TeacherAnswer:
        return TeacherAnswer(content, None, top or None, latency_s, prompt_tokens, completion_tokens)
