"""Every error a user can cause or fix, under one base class.

The CLI prints any `DistillError` as one line, `error: <message>`, with no traceback; the service
turns the ones a request can cause into 4xx answers. Each message names what to fix: the file,
line and field of bad data, the JSON pointer of a bad schema, or the setting to change.
"""

from __future__ import annotations

from pathlib import Path


class DistillError(Exception):
    """Base of every project error; its message alone tells the user what to fix."""


class ConfigError(DistillError, ValueError):
    """A task file that cannot be used; the message names file and field."""


class DataError(DistillError, ValueError):
    """Unusable input; `str()` reads `FILE:LINE: field F: what is wrong`."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, problem: str) -> None:
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: field {field!r}: {problem}" if field else f"{where}: {problem}")


class SchemaError(DistillError, ValueError):
    """An unusable JSON Schema; `pointer` is the JSON pointer of the problem ('' = the whole schema)."""

    def __init__(self, pointer: str, problem: str, source: str = "<schema>") -> None:
        self.pointer, self.problem, self.source = pointer, problem, source
        super().__init__(f"{source}: at {pointer or '/'}: {problem}")


class DocumentTooLong(DistillError, ValueError):
    """A document whose prompt and answer do not fit the model's context: refused, never truncated."""


class AnswerBudgetTooSmall(DistillError, ValueError):
    """A token budget smaller than the shortest answer the schema allows: refused before decoding."""

    def __init__(self, budget: int, needed: int) -> None:
        self.budget, self.needed = budget, needed
        super().__init__(f"{budget} tokens cannot hold the shortest valid answer ({needed} tokens with end-of-sequence)")


class ModelNotAvailable(DistillError, RuntimeError):
    """The requested base model is not on disk and could not be fetched."""


class TeacherUnavailable(DistillError, RuntimeError):
    """The teacher cannot be used as configured; the message names the setting to fix."""


class RegistryError(DistillError, ValueError):
    """A registry reference (task, method, version, alias) that does not exist, or a move it refuses."""


class UnknownVariant(DistillError, KeyError):
    """The task or variant is not served; the message lists what is."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidRequest(DistillError, ValueError):
    """A service request that cannot be answered as asked; `field` names the request field to fix."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}")


class InputTooLong(DistillError, ValueError):
    """A request input over the service's size limit (`field` names it)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}")


class MethodsFailed(DistillError, RuntimeError):
    """Some training methods of a run failed; the others were evaluated, registered and gated (`summary`)."""

    def __init__(self, failed: dict[str, str], summary: dict) -> None:
        self.failed, self.summary = failed, summary
        finished = [m for m in summary.get("variants", {}) if m not in ("base", "teacher")]
        super().__init__(
            "methods that did not finish: "
            + "; ".join(f"{method}: {why}" for method, why in failed.items())
            + f". Finished, evaluated and gated: {finished or 'none'}"
        )


class ServiceReloadFailed(DistillError, RuntimeError):
    """The service named in the task's `service` settings could not be made to serve the promoted version; the
    adapter stays registered and promoted (a reload by hand, or the next run, picks it up)."""


class SandboxUnavailable(DistillError, RuntimeError):
    """Code would have to run without full isolation; the message says why and names the setting that accepts less."""


class Overloaded(DistillError, RuntimeError):
    """The service has no room for this request now (a full queue, no sandbox slot): answered 503 with Retry-After."""

    def __init__(self, problem: str, retry_after_s: float = 1.0) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(problem)


class EngineUnavailable(DistillError, RuntimeError):
    """The serving engine behind the service (a vLLM server) is not answering: requests get 503, not a hang."""


class SandboxBusy(Overloaded):
    """Every sandbox slot is taken (`sandbox_max_concurrent`)."""


class RunInProgress(DistillError, RuntimeError):
    """Another run of the same task holds its run lock; the message names it (pid, host, start)."""
