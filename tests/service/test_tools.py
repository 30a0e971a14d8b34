"""Function calls through the running service: a task imported from a function-calling fine-tuning file, called by the
official `openai` client with `tools`, answers with `tool_calls` naming an offered function, streamed or not."""

import json

import pytest
import yaml
from openai import OpenAI, UnprocessableEntityError

from core.common.config import TaskConfig
from core.common.openai_files import read_files, write_task
from core.registry import Registry
from tests.conftest import make_adapter

FUNCTIONS = {"set_thermostat": {"celsius": {"type": "number"}}, "lights": {"room": {"type": "string"}, "on": {"type": "boolean"}}}
TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": p}}} for n, p in FUNCTIONS.items()]


def _line(user: str, name: str, arguments: dict) -> str:
    call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
    messages = [{"role": "user", "content": user}, {"role": "assistant", "tool_calls": [call]}]
    return json.dumps({"messages": messages, "tools": TOOLS})


@pytest.fixture(scope="module")
def home(tiny_model_dir, tmp_path_factory):
    """A service over one task imported from a function-calling file (random adapter weights on the tiny model)."""
    from core.settings import ServiceSettings
    from service.main import serve_in_thread

    root = tmp_path_factory.mktemp("tools")
    path = root / "calls.jsonl"
    path.write_text("".join(_line(f"{18 + i} degrees please", "set_thermostat", {"celsius": 18 + i}) + "\n" for i in range(3)))
    with path.open("a") as f:
        f.write(_line("Hall lights on", "lights", {"room": "hall", "on": True}) + "\n")
    imported = TaskConfig.from_yaml(write_task(read_files([path]), root / "task", "home"))
    cfg = imported.model_copy(update={"model": imported.model.model_copy(update={"base_model": str(tiny_model_dir)}), "max_new_tokens": 60})
    registry = Registry(root / "runs")
    registry.register(
        "home", "sft", make_adapter(cfg, root / "adapter", 5), {"field_f1": 0.5}, yaml.safe_dump(cfg.model_dump(mode="json")), {}
    )
    registry.promote("home", "sft/v0001", cfg.promotion.model_copy(update={"guard_min": {}}))
    server, url = serve_in_thread(ServiceSettings(runs_dir=root / "runs", audit_log=root / "audit.jsonl", rate_limit_per_s=1000))
    yield OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    server.should_exit = True


def test_the_official_client_gets_a_call_to_an_offered_function(home):
    messages = [{"role": "user", "content": "Turn the kitchen lights off"}]
    done = home.chat.completions.create(model="home:production", messages=messages, tools=TOOLS)
    [call] = done.choices[0].message.tool_calls
    assert done.choices[0].finish_reason == "tool_calls" and done.choices[0].message.content is None
    assert call.type == "function" and call.function.name in FUNCTIONS and isinstance(json.loads(call.function.arguments), dict)
    forced = home.chat.completions.create(
        model="home:production", messages=messages, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "lights"}}
    )
    assert forced.choices[0].message.tool_calls[0].function.name == "lights"
    only = home.chat.completions.create(model="home:production", messages=messages, tools=TOOLS[:1])  # the client offers one
    assert only.choices[0].message.tool_calls[0].function.name == "set_thermostat"


def test_a_streamed_call_comes_in_openai_s_chunks(home):
    stream = home.chat.completions.create(
        model="home:production",
        messages=[{"role": "user", "content": "Warmer"}],
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    calls = [c for chunk in chunks for choice in chunk.choices for c in choice.delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].function.name in FUNCTIONS and json.loads(calls[0].function.arguments) is not None
    assert [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason] == ["tool_calls"]
    assert chunks[-1].usage.completion_tokens > 0


def test_tools_the_task_does_not_call_are_refused_naming_the_field(home):
    weather = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}]
    with pytest.raises(UnprocessableEntityError, match="tools: none of the offered functions"):
        home.chat.completions.create(model="home:production", messages=[{"role": "user", "content": "Rain?"}], tools=weather)
