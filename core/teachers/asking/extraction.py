"""Document extraction asked of an endpoint: JSON held to the task's schema by `response_format`, checked on arrival."""

from __future__ import annotations

from core.common.json_schema import JsonSchema
from core.teachers.base import EndpointTask, TeacherAnswer


def extraction_answer(
    text: str, errors: list[str], top_logprobs: list | None, latency_s: float, prompt_tokens: int, completion_tokens: int
) -> TeacherAnswer:
    """An extraction's text as a teacher answer: one with validation `errors` becomes a failed trace."""
    if errors:
        return TeacherAnswer(
            None,
            latency_s=latency_s,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            error=f"answer does not validate: {'; '.join(errors)[:200]}",
        )
    # The text exactly as generated: its tokens are the ones top_logprobs describe (the student's KL term needs them).
    return TeacherAnswer(text, None, top_logprobs, latency_s, prompt_tokens, completion_tokens)


class ExtractionAsking(EndpointTask):
    """A JSON document per input that validates against `schema` (the task's, already checked where it was loaded)."""

    def __init__(self, max_new_tokens: int, schema: JsonSchema) -> None:
        self.max_new_tokens, self.schema = max_new_tokens, schema

    def request(self) -> dict:
        return {
            "max_tokens": self.max_new_tokens,
            "response_format": {"type": "json_schema", "json_schema": {"name": "extraction", "schema": self.schema.schema, "strict": True}},
        }

    def read_reply(self, content, top, latency_s, prompt_tokens, completion_tokens) -> TeacherAnswer:
        _, errors = self.schema.parse(content)
        return extraction_answer(content, errors, top or None, latency_s, prompt_tokens, completion_tokens)
