"""The serving runtime without HTTP, over a real registry of two adapters on the tiny model: admission into bounded lanes,
the input limits, a client's `stop`, the names clients call models by, and one audit record per answer."""

import json

import pytest

from core.errors import InputTooLong, InvalidRequest, Overloaded, UnknownVariant
from core.serving.runtime import ServingRuntime
from core.settings import ServiceSettings

TEXT = "Num_Bank_Accounts: 3; Interest_Rate: 12"


@pytest.fixture(scope="module")
def runtime(registry, tmp_path_factory):
    settings = ServiceSettings(
        runs_dir=registry.root,
        audit_log=tmp_path_factory.mktemp("audit") / "audit.jsonl",
        max_queue=2,
        max_input_chars=200,
        max_input_tokens=30,
        registry_poll_s=0,  # no watch: these tests move nothing
        model_names={"ft:gpt-4o-mini:acme::old": "creditmix:production", "ft:gone": "other-task:production"},
    )
    runtime = ServingRuntime(settings)
    runtime.start()
    yield runtime
    runtime.close()


def _audit(runtime) -> list[dict]:
    return [json.loads(line) for line in runtime.settings.audit_log.read_text().splitlines()]


def test_a_full_lane_refuses_at_once_and_a_finished_request_frees_its_place(runtime):
    refused = runtime.metrics.refused.labels("classification", "queue_full")
    before = refused._value.get()
    with runtime.admitted("creditmix"), runtime.admitted("creditmix"):
        with pytest.raises(Overloaded, match="classification lane is full .2 requests"):
            with runtime.admitted("creditmix"):
                pass
        assert runtime.in_flight["classification"] == 2
    assert runtime.in_flight["classification"] == 0 and refused._value.get() == before + 1
    with runtime.admitted("creditmix"):  # the places are free again
        assert runtime.in_flight["classification"] == 1


def test_every_answer_is_audited_once_with_its_caller_and_input(runtime):
    lines = len(_audit(runtime)) if runtime.settings.audit_log.exists() else 0
    answer = runtime.infer("creditmix", "sft", TEXT, caller="key-abc")
    assert answer.output in {"Good", "Standard", "Bad"} and answer.variant == "sft" and answer.request_id
    records = _audit(runtime)[lines:]
    assert len(records) == 1
    expected = {"route": "infer", "caller": "key-abc", "input": TEXT, "output": answer.output, "task": "creditmix"}
    assert expected.items() <= records[0].items()
    assert "tests_sha256" not in records[0]  # no caller code ran


def test_inputs_over_a_limit_are_refused_naming_the_field_before_any_decoding(runtime):
    with pytest.raises(InputTooLong, match="201 characters, over the limit of 200") as exc:
        runtime.infer("creditmix", "sft", "x" * 201)
    assert exc.value.field == "input"
    with pytest.raises(InputTooLong, match="over the limit of 30 .max_input_tokens.") as exc:
        runtime.chat("creditmix:sft", "Interest rate 12 " * 10)  # 170 characters, 40-odd tokens
    assert exc.value.field == "messages"
    with pytest.raises(InvalidRequest, match="json_schema") as exc:  # classification takes no schema; extraction does
        runtime.infer("creditmix", "sft", TEXT, json_schema={"type": "object"})
    assert "only idp tasks do" in str(exc.value)


def test_a_stop_string_cuts_the_answer_and_its_token_count(runtime):
    whole = runtime.chat("creditmix:sft", TEXT)
    assert len(whole.output) >= 2  # a label of the task
    cut = runtime.chat("creditmix:sft", TEXT, stop=[whole.output[1:]])
    assert cut.output == whole.output[:1] and cut.finish_reason == "stop"
    assert cut.completion_tokens <= whole.completion_tokens and cut.completion_tokens >= 1


def test_clients_call_configured_names_of_served_models_only(runtime):
    names = runtime.model_names()
    assert {"creditmix:sft", "creditmix:production", "ft:gpt-4o-mini:acme::old"} <= set(names)
    assert "ft:gone" not in names  # its target is not served: not offered
    old = runtime.chat("ft:gpt-4o-mini:acme::old", TEXT)
    assert old.task == "creditmix" and old.adapter == runtime.chat("creditmix:production", TEXT).adapter
    with pytest.raises(UnknownVariant, match="use <task>:<variant>"):
        runtime.chat("creditmix", TEXT)
    with pytest.raises(UnknownVariant, match="has no 'staging' adapter"):
        runtime.chat("creditmix:staging", TEXT)
