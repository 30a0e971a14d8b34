"""Code generation asked of an endpoint: `candidates` answers per spec, kept only where one passes the row's tests.

The first candidate is asked at temperature 0, the rest at `codegen.temperature`; `check` runs every candidate against
its task's tests in the sandbox (`core.sandbox`) and keeps the first that passes: execution-verified rejection sampling.
"""

from __future__ import annotations

from core.common.prompts import extract_code
from core.common.rows import Example
from core.sandbox import run_grouped
from core.settings import ModelSettings
from core.teachers.base import EndpointTask, TeacherAnswer


class CodeAsking(EndpointTask):
    """`candidates` answers per spec; which of them pass is `check`'s business."""

    def __init__(self, candidates: int, temperature: float, max_new_tokens: int, settings: ModelSettings, timeout_s: float) -> None:
        self.candidates, self.temperature, self.max_new_tokens = candidates, temperature, max_new_tokens
        self.settings, self.timeout_s = settings, timeout_s  # settings: the operator's sandbox the candidates run in

    def request(self) -> dict:
        return {"max_tokens": self.max_new_tokens}

    def read_reply(self, content, top, latency_s, prompt_tokens, completion_tokens) -> TeacherAnswer:
        return TeacherAnswer(content, None, top or None, latency_s, prompt_tokens, completion_tokens)

    def combine(self, answers: list[TeacherAnswer]) -> TeacherAnswer:
        """One answer carrying every candidate (`extra["candidates"]`; None where that request failed); the first usable
        one stands until the tests choose. Latency and tokens are the candidates' sums: what the task cost."""
        usable = [a for a in answers if a.output is not None]
        combined = TeacherAnswer(
            usable[0].output if usable else None,
            top_logprobs=answers[0].top_logprobs if answers[0].output is not None else None,
            latency_s=sum(a.latency_s for a in answers),
            prompt_tokens=sum(a.prompt_tokens for a in answers),
            completion_tokens=sum(a.completion_tokens for a in answers),
            error=None if usable else answers[0].error,
            transient=not usable and all(a.transient for a in answers),
        )
        combined.extra["candidates"] = [a.output for a in answers]
        return combined

    def check(self, rows: list[Example], answers: list[TeacherAnswer]) -> list[TeacherAnswer]:
        """Run every candidate against its task's tests; keep the first that passes, or fail the answer (not transient:
        a rerun does not ask again) when none does. Each trace records every candidate and its verdict."""
        todo = []
        for row, answer in zip(rows, answers):
            texts = answer.extra.get("candidates") or ([answer.output] if answer.output is not None else [])
            if row.tests is None and not answer.transient:
                answer.output, answer.top_logprobs, answer.error = None, None, "no tests: the answer cannot be verified"
            todo.append([t for t in texts if t is not None] if not answer.transient and row.tests is not None else [])
        grouped = run_grouped(
            [[(extract_code(t), row.tests) for t in texts] for row, texts in zip(rows, todo)], self.settings, self.timeout_s
        )
        for answer, texts, results in zip(answers, todo, grouped):
            if not texts:
                continue
            answer.extra = {
                "candidates": [
                    {"answer": t, "passed": r.passed, "cause": r.cause, "isolation": r.isolation} for t, r in zip(texts, results)
                ]
            }
            passing = next((i for i, r in enumerate(results) if r.passed), None)
            if passing is None:
                answer.output, answer.top_logprobs = None, None
                answer.error = f"no candidate passed the tests: {len(texts)} tried, first failed by {results[0].cause}"
            else:
                if passing:  # log-probabilities describe the first (greedy) candidate's tokens only
                    answer.top_logprobs = None
                answer.output, answer.error = texts[passing], None
        return answers
