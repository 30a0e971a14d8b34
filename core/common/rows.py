"""Rows: the records every layer passes around, and the two hash keys.

* `Example` is one input and its gold answer as the model should write it (a label, or the target
  JSON text); `Pair` is one preference pair for DPO; `CodeTask` is one code generation row (spec, tests, and
  optionally the entry point, a solution and its plan).
* `text_sha256` and `json_sha256` are the two hash keys (traces by input, caches by settings);
  `rows_fingerprint` keys a set of rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass


@dataclass
class Example:
    """One input and its gold answer as the model should write it: a label, (idp) the target JSON text, or (codegen) the
    plan and code; codegen rows also carry the `tests` an answer must pass."""

    id: str
    text: str
    label: str | None = None
    tests: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Pair:
    """A preference pair: for input `prompt` (the chat around it is the task's), `chosen` is preferred to `rejected`."""

    prompt: str
    chosen: str
    rejected: str
    source: str  # 'user', 'gold', 'teacher', 'student_wrong', 'perturbed_gold', 'student_passing'
    line: int | None = None


def text_sha256(text: str) -> str:
    """The key of an input (teacher traces are cached by it)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def json_sha256(value, length: int | None = None) -> str:
    """A stable key of settings or data: sha256 of the value as sorted JSON, optionally cut to `length` hex digits."""
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
    return digest[:length] if length else digest


def rows_fingerprint(rows: list[Example]) -> str:
    """One sha256 over the rows, in order: the registry records which data an adapter saw."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()


@dataclass
class CodeTask:
    id: str
    prompt: str
    tests: str | None  # None only for specs without tests (unlabeled traffic): nothing can be verified against them
    entry_point: str | None = None
    solution: str | None = None
    plan: str | None = None
