"""OpenAI fine-tuning files in: each bad line named with its file, line and reason; classification and extraction
files become rows and a task file that loads; free-text chat files become `type: text` tasks; preference lines become
DPO pairs; a file with too many bad lines writes nothing."""

import json
from pathlib import Path

import pytest

from core.common.config import TaskConfig
from core.common.openai_files import read_files, write_task
from core.errors import DataError
from core.kinds import for_config
from core.kinds.data import load_rows
from core.settings import ModelSettings

TOY = Path(__file__).parents[2] / "data" / "openai" / "toy_chat_fine_tuning.jsonl"  # OpenAI cookbook's example file


def _chat(user: str, answer: str, system: str = "Classify the ticket's priority.") -> str:
    return json.dumps(
        {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}
    )


def test_the_cookbook_file_is_checked_line_by_line_and_becomes_a_free_text_task(tmp_path):
    report = read_files([TOY])
    assert report.lines == 5 and report.usable == 4 and report.multi_turn == 1
    assert report.bad == [f"{TOY}:4: field 'messages': no user message before the assistant's answer"]
    assert report.kind == "text" and "neither a label set" in report.why_text  # a chat assistant's replies
    assert "free-text replies" in report.summary()
    assert report.instruction == "You are a happy assistant that puts a positive spin on everything."
    two_turns = next(e for e in report.examples() if e.turns > 1)
    assert (two_turns.input, two_turns.answer) == ("I don't even know how to play golf.", "It's easy to learn!")  # the last exchange
    task = write_task(report, tmp_path / "toy", "toy", max_bad_share=0.25)  # 1 bad line in 5
    cfg = TaskConfig.from_yaml(task)
    assert cfg.type == "text" and cfg.instruction == report.instruction
    rows = load_rows(for_config(cfg, ModelSettings()), cfg.data.train)
    assert len(rows) == 4 and "It's easy to learn!" in [r.label for r in rows]


def test_a_classification_file_becomes_a_task_that_loads(tmp_path):
    lines = [
        _chat(f"ticket {i}: the server is down" if i % 3 == 0 else f"ticket {i}: a typo", "P1" if i % 3 == 0 else "P3") for i in range(30)
    ]
    lines += [
        _chat("ticket 0: the server is down", "P1"),
        _chat("ticket 1: a typo", "P1"),
        "{not json",
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}),
    ]
    lines.append(
        json.dumps(
            {
                "input": {"messages": [{"role": "user", "content": "ticket 5"}]},
                "preferred_output": [{"role": "assistant", "content": "P3"}],
                "non_preferred_output": [{"role": "assistant", "content": "P1"}],
            }
        )
    )
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = read_files([path], count_tokens=lambda texts: [len(t.split()) for t in texts], max_tokens=100)
    assert report.kind == "classification" and report.labels == {"P3": 20, "P1": 11}
    assert report.duplicates == 1 and report.conflicts == [f"{path}:32: the same input was answered otherwise at {path}:2, 'P1' here"]
    assert report.bad == [
        f"{path}:33: not JSON (Expecting property name enclosed in double quotes)",
        f"{path}:34: field 'messages[0].role': unknown role 'robot' (one of system, user, assistant, tool, function, developer)",
    ]
    assert report.preference_pairs == 1 and list(report.preferences()) == [{"prompt": "ticket 5", "chosen": "P3", "rejected": "P1"}]
    with pytest.raises(DataError, match="2 of 35 lines cannot be used"):
        write_task(report, tmp_path / "refused", "tickets", max_bad_share=0.05)
    assert not (tmp_path / "refused").exists()  # nothing written
    task_file = write_task(report, tmp_path / "task", "tickets", max_bad_share=0.1)
    cfg = TaskConfig.from_yaml(task_file)
    assert cfg.type == "classification" and cfg.labels == ["P3", "P1"] and cfg.instruction == "Classify the ticket's priority."
    assert cfg.methods == ["sft", "dpo"] and cfg.data.preferences.exists()
    rows = load_rows(for_config(cfg, ModelSettings()), cfg.data.train)
    assert len(rows) == 31 and {r.label for r in rows} == {"P1", "P3"}


def test_an_extraction_file_gets_a_draft_schema_and_loads(tmp_path):
    answers = [{"vendor": f"Acme {i}", "total": 10 + i + (0.5 if i % 2 else 0), "paid": i % 2 == 0} for i in range(6)]
    path = tmp_path / "docs.jsonl"
    path.write_text(
        "".join(_chat(f"Invoice {i} from Acme {i}", json.dumps(a), "Extract the invoice.") + "\n" for i, a in enumerate(answers))
    )
    report = read_files([path])
    assert report.kind == "idp"
    assert report.schema == {
        "type": "object",
        "properties": {"vendor": {"type": "string"}, "total": {"type": "number"}, "paid": {"type": "boolean"}},
        "required": ["vendor", "total", "paid"],
    }
    cfg = TaskConfig.from_yaml(write_task(report, tmp_path / "task", "invoices"))
    assert cfg.type == "idp" and cfg.schema_file.exists()
    assert len(load_rows(for_config(cfg, ModelSettings()), cfg.data.train)) == 6


def _call(user: str, name: str, arguments, calls: int = 1, legacy: bool = False) -> str:
    """A function-calling line as OpenAI's fine-tuning guide shapes it: the assistant's turn is a tool call, the line
    offers its `tools`; `legacy`: the older `function_call` / `functions` fields."""
    encoded = arguments if isinstance(arguments, str) else json.dumps(arguments)
    offered = [("set_thermostat", {"celsius": {"type": "number"}}), ("lights", {"room": {"type": "string"}, "on": {"type": "boolean"}})]
    if legacy:
        turn = {"role": "assistant", "function_call": {"name": name, "arguments": encoded}}
        extra = {"functions": [{"name": n, "parameters": {"type": "object", "properties": p}} for n, p in offered]}
    else:
        call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": encoded}}
        turn = {"role": "assistant", "tool_calls": [call] * calls}
        extra = {
            "tools": [{"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": p}}} for n, p in offered]
        }
    system = {"role": "system", "content": "Call one of the home's functions."}
    return json.dumps({"messages": [system, {"role": "user", "content": user}, turn], **extra})


def test_a_function_calling_file_becomes_extraction_whose_schema_names_only_the_offered_functions(tmp_path, tiny_model_dir):
    path = tmp_path / "calls.jsonl"
    lines = [_call(f"Make it {18 + i} degrees in here", "set_thermostat", {"celsius": 18 + i}) for i in range(4)]
    lines += [_call("Kitchen lights off please", "lights", {"room": "kitchen", "on": False}, legacy=True)]
    lines += [_call("Lights on in the hall and set 20 degrees", "lights", {"room": "hall", "on": True}, calls=2)]  # parallel
    lines += [_call("Bedroom lights on", "lights", '"{\\"room\\": \\"bedroom\\"}"')]  # arguments encoded twice: decoded
    lines += [_call("Lights", "lights", '"on"')]  # a JSON string, but not of an object
    path.write_text("\n".join(lines) + "\n")
    report = read_files([path])
    assert report.bad == [
        f"{path}:6: field 'messages[2].tool_calls': 2 calls; one call per answer",
        f"{path}:8: field 'messages[2].tool_calls[0].function.arguments': not a JSON object",
    ]
    assert report.kind == "idp" and report.usable == 6 and report.encoded_twice == 1
    assert "encoded twice (a JSON string of the object) in 1 examples: decoded" in report.summary()
    assert report.schema["properties"]["name"] == {"type": "string", "enum": ["lights", "set_thermostat"]}
    assert report.schema["properties"]["arguments"] == {  # drafted from the calls' arguments: no free-form object
        "type": "object",
        "properties": {"celsius": {"type": "integer"}, "room": {"type": "string"}, "on": {"type": "boolean"}},
        "required": [],
    }
    assert report.schema["required"] == ["name", "arguments"]
    cfg = TaskConfig.from_yaml(write_task(report, tmp_path / "task", "home", max_bad_share=0.5))
    kind = for_config(cfg.model_copy(update={"model": cfg.model.model_copy(update={"base_model": str(tiny_model_dir)})}), ModelSettings())
    rows = load_rows(kind, cfg.data.train)
    assert [json.loads(r.label)["name"] for r in rows] == ["set_thermostat"] * 4 + ["lights"] * 2
    assert json.loads(rows[4].label)["arguments"] == {"room": "kitchen", "on": False}
    assert json.loads(rows[5].label)["arguments"] == {"room": "bedroom"}
    from core.model.loading import load_model

    model, tokenizer = load_model(kind.cfg.model, ModelSettings())
    [answer] = kind.decoder(model, tokenizer).extract([rows[0].text])  # a random model, held to the drafted schema
    assert answer.valid and json.loads(answer.text)["name"] in ("lights", "set_thermostat")


def test_a_preference_file_alone_trains_its_preferred_replies_then_dpo(tmp_path):
    """OpenAI's DPO jobs take preference lines alone (its docs' format: `input.messages`, `preferred_output`,
    `non_preferred_output`): the preferred replies become the SFT rows, the pairs DPO's."""
    from core.training.dpo_trainer import load_pairs

    def pair(question: str, good: str, bad: str) -> str:
        return json.dumps(
            {
                "input": {"messages": [{"role": "user", "content": question}], "tools": [], "parallel_tool_calls": True},
                "preferred_output": [{"role": "assistant", "content": good}],
                "non_preferred_output": [{"role": "assistant", "content": bad}],
            }
        )

    lines = [pair(f"How cold is city {i} today?", f"Mild in city {i}: a high near {60 + i}°F.", "Not very.") for i in range(8)]
    path = tmp_path / "dpo.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = read_files([path], count_tokens=lambda texts: [len(t.split()) for t in texts], max_tokens=100)
    assert report.from_preferences and report.preference_pairs == 8 and report.usable == 8 and report.kind == "text"
    assert "preferred replies are the training rows" in report.summary()
    cfg = TaskConfig.from_yaml(write_task(report, tmp_path / "task", "weather"))
    assert cfg.type == "text" and cfg.methods == ["sft", "dpo"]
    rows = load_rows(for_config(cfg, ModelSettings()), cfg.data.train)
    assert [r.label for r in rows][:2] == ["Mild in city 0: a high near 60°F.", "Mild in city 1: a high near 61°F."]
    pairs = load_pairs(cfg.data.preferences)
    assert len(pairs) == 8 and pairs[0].chosen == rows[0].label and pairs[0].rejected == "Not very."


DOCS_DPO = Path(__file__).parents[2] / "data" / "openai" / "dpo_docs_example.jsonl"  # OpenAI's DPO guide's example, one line


def test_the_dpo_guides_own_example_imports_and_both_methods_train_on_it(tmp_path, tiny_model_dir):
    """The example line of OpenAI's DPO guide, as published (its `tools` and `parallel_tool_calls` included): the import
    makes it a free-text task whose preferred reply SFT trains on and whose pair DPO trains on, on the tiny model."""
    from core.training.dpo_trainer import load_pairs, train_dpo
    from core.training.sft_trainer import train_sft

    report = read_files([DOCS_DPO], count_tokens=lambda texts: [len(t.split()) for t in texts], max_tokens=4096)
    assert report.from_preferences and report.preference_pairs == 1 and report.usable == 1 and not report.bad
    cfg = TaskConfig.from_yaml(write_task(report, tmp_path / "task", "weather"))
    assert cfg.type == "text" and cfg.methods == ["sft", "dpo"]
    rows = load_rows(for_config(cfg, ModelSettings()), cfg.data.train)
    pairs = load_pairs(cfg.data.preferences)
    assert [r.text for r in rows] == ["Hello, can you tell me how cold San Francisco is today?"]
    assert rows[0].label.startswith("Today in San Francisco") and rows[0].label.endswith("57°F (14°C).")
    assert len(pairs) == 1 and pairs[0].chosen == rows[0].label and pairs[0].rejected.startswith("It is not particularly cold")

    cfg.model.base_model = str(tiny_model_dir)
    cfg.training.max_steps, cfg.training.batch_size, cfg.dpo.min_pairs = 1, 1, 1
    sft, sft_stats = train_sft(cfg, ModelSettings(), rows, tmp_path / "sft-ck", tmp_path / "sft", progress=False)
    dpo, dpo_stats = train_dpo(cfg, ModelSettings(), pairs, tmp_path / "dpo-ck", tmp_path / "dpo", start_adapter=sft, progress=False)
    assert sft_stats.steps == dpo_stats.steps == 1
    assert (sft / "adapter_model.safetensors").exists() and (dpo / "adapter_model.safetensors").exists()


DOCS = Path(__file__).parents[2] / "data" / "openai"  # the fine-tuning guide's example files, as published


def _on_tiny(cfg: TaskConfig, tiny_model_dir: Path) -> TaskConfig:
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"base_model": str(tiny_model_dir)})})
    cfg.training.max_steps, cfg.training.batch_size = 1, 1
    return cfg


def test_the_fine_tuning_guides_function_calling_file_imports_trains_and_answers_in_its_schema(tmp_path, tiny_model_dir):
    """The guide's ten `get_current_weather` lines (compact JSON, arguments as a JSON string, `tools` on every line)."""
    from core.model.loading import load_model
    from core.training.sft_trainer import train_sft

    report = read_files([DOCS / "function_calling_docs_example.jsonl"])
    assert report.kind == "idp" and report.usable == 10 and not report.bad
    assert report.schema["properties"]["name"] == {"type": "string", "enum": ["get_current_weather"]}
    assert set(report.schema["properties"]["arguments"]["properties"]) == {"location", "format"}
    cfg = _on_tiny(TaskConfig.from_yaml(write_task(report, tmp_path / "task", "weather")), tiny_model_dir)
    kind = for_config(cfg, ModelSettings())
    rows = load_rows(kind, cfg.data.train)
    assert json.loads(rows[0].label) == {
        "name": "get_current_weather",
        "arguments": {"location": "San Francisco, USA", "format": "celsius"},
    }
    adapter, stats = train_sft(cfg, ModelSettings(), rows, tmp_path / "ck", tmp_path / "sft", progress=False)
    assert stats.steps == 1
    model, tokenizer = load_model(cfg.model, ModelSettings(), adapter=adapter)
    [answer] = kind.decoder(model, tokenizer).extract(["What is the weather in Denver?"])
    assert answer.valid and json.loads(answer.text)["name"] == "get_current_weather"


def test_the_fine_tuning_guides_chat_example_imports_and_trains_with_its_system_message_as_the_instruction(tmp_path, tiny_model_dir):
    """The guide's three "Marv" lines: sarcastic free text, one system message they share."""
    from core.training.sft_trainer import train_sft

    report = read_files([DOCS / "chat_docs_example.jsonl"])
    assert report.kind == "text" and report.usable == 3 and not report.bad
    assert report.instruction == "Marv is a factual chatbot that is also sarcastic."
    cfg = _on_tiny(TaskConfig.from_yaml(write_task(report, tmp_path / "task", "marv")), tiny_model_dir)
    assert cfg.instruction == report.instruction
    rows = load_rows(for_config(cfg, ModelSettings()), cfg.data.train)
    assert [r.text for r in rows] == ["What's the capital of France?", "Who wrote 'Romeo and Juliet'?", "How far is the Moon from Earth?"]
    _, stats = train_sft(cfg, ModelSettings(), rows, tmp_path / "ck", tmp_path / "sft", progress=False)
    assert stats.steps == 1


def test_the_cookbooks_drone_file_imports_with_its_twice_encoded_arguments_decoded_and_trains(tmp_path, tiny_model_dir):
    """The first lines of the cookbook's `drone_training.jsonl`: 16 functions offered on every line, a system message,
    and a third line whose arguments are a JSON string of the object."""
    from core.model.loading import load_model
    from core.training.sft_trainer import train_sft

    report = read_files([DOCS / "drone_training_first3.jsonl"])
    assert report.kind == "idp" and report.usable == 3 and not report.bad and report.encoded_twice == 1
    assert len(report.schema["properties"]["name"]["enum"]) == 16 and "reject_request" in report.schema["properties"]["name"]["enum"]
    assert report.instruction.startswith("You are an intelligent AI that controls a drone.")
    cfg = _on_tiny(TaskConfig.from_yaml(write_task(report, tmp_path / "task", "drone")), tiny_model_dir)
    kind = for_config(cfg, ModelSettings())
    rows = load_rows(kind, cfg.data.train)
    assert json.loads(rows[2].label) == {"name": "land_drone", "arguments": {"location": "current"}}
    adapter, _ = train_sft(cfg, ModelSettings(), rows, tmp_path / "ck", tmp_path / "sft", progress=False)
    model, tokenizer = load_model(cfg.model, ModelSettings(), adapter=adapter)
    [answer] = kind.decoder(model, tokenizer).extract(["Take a panorama photo"])
    assert answer.valid and json.loads(answer.text)["name"] in report.schema["properties"]["name"]["enum"]
