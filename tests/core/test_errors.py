"""Every error names what to fix, in one line the CLI prints as it is."""

from __future__ import annotations

import pytest

from core.errors import (
    AnswerBudgetTooSmall,
    DataError,
    DistillError,
    InvalidRequest,
    MethodsFailed,
    Overloaded,
    SandboxBusy,
    SchemaError,
    UnknownVariant,
)


def test_data_errors_read_file_line_field():
    assert str(DataError("data/train.jsonl", 7, "label", "missing")) == "data/train.jsonl:7: field 'label': missing"
    assert str(DataError("data/train.jsonl", None, None, "empty file: no rows")) == "data/train.jsonl: empty file: no rows"
    assert (
        str(SchemaError("/properties/total", "unknown type 'money'", "schema.json"))
        == "schema.json: at /properties/total: unknown type 'money'"
    )


def test_request_errors_name_the_field_and_a_missing_variant_is_not_quoted():
    assert str(InvalidRequest("max_tokens", "too small")) == "max_tokens: too small"
    assert str(UnknownVariant("task 'x' has no 'kd' adapter")) == "task 'x' has no 'kd' adapter"  # KeyError would add quotes
    assert "2 tokens cannot hold the shortest valid answer (9 tokens" in str(AnswerBudgetTooSmall(2, 9))


def test_a_failed_method_names_why_and_what_finished():
    error = MethodsFailed({"kd": "teacher unreachable"}, {"variants": {"base": {}, "sft": {}, "teacher": {}}})
    assert str(error) == "methods that did not finish: kd: teacher unreachable. Finished, evaluated and gated: ['sft']"
    assert "none" in str(MethodsFailed({"sft": "killed"}, {}))


@pytest.mark.parametrize("error", [DataError("f", 1, "x", "y"), Overloaded("full"), SandboxBusy("busy", 2.0)])
def test_every_error_is_a_distill_error_the_cli_prints_in_one_line(error):
    assert isinstance(error, DistillError) and "\n" not in str(error)
    if isinstance(error, Overloaded):
        assert error.retry_after_s > 0
