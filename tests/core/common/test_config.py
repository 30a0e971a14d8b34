import pytest

from core.common.config import TaskConfig
from core.errors import ConfigError


def test_defaults_are_the_demo():
    cfg = TaskConfig()
    assert cfg.name == "creditmix" and cfg.labels == ["Good", "Standard", "Bad"] and "credit mix" in cfg.instruction


def test_user_yaml_gets_an_instruction_naming_its_labels_and_paths_relative_to_it(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "tickets.yaml"
    path.write_text("name: tickets\nlabels: [P1, P2, P3]\ndata: {train: tickets.csv}\n")
    cfg = TaskConfig.from_yaml(path)
    assert "P1, P2, P3" in cfg.instruction and "credit" not in cfg.instruction
    assert cfg.data.train == tmp_path / "sub" / "tickets.csv"


@pytest.mark.parametrize(
    "text, words",
    [
        ("training: {learning_rate: -1}\n", "field training.learning_rate"),
        ("labels: [A, A]\n", "labels must be distinct"),
        ("nonsense_field: 3\n", "field nonsense_field"),
        ("model: {quantization: int3}\n", "field model.quantization"),
        ("calibration: {label_bias: {Excellent: 1.0}}\n", "not in labels"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_bad_yaml_names_file_and_field(tmp_path, text, words):
    path = tmp_path / "task.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        TaskConfig.from_yaml(path)
    assert str(path) in str(err.value) and words in str(err.value)


def test_yaml_errors_name_the_line_of_the_field(tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text("name: tickets\nlabels: [P1, P2, P3]\ntraining:\n  epochs: 1\n  learning_rate: -3\n")
    with pytest.raises(ConfigError, match=r"task.yaml:5: field training.learning_rate: "):
        TaskConfig.from_yaml(path)


def test_a_named_pool_is_used_by_default(tmp_path):
    """data.unlabeled alone: SFT plus self-training; with a teacher named, KD too; methods named win."""
    path = tmp_path / "task.yaml"
    path.write_text("name: t\nlabels: [a, b]\ndata: {train: t.jsonl, unlabeled: pool.jsonl}\n")
    assert TaskConfig.from_yaml(path).methods == ["sft", "selftrain"]
    path.write_text("name: t\nlabels: [a, b]\ndata: {train: t.jsonl, unlabeled: pool.jsonl}\nteacher: {backend: openai, model: m}\n")
    assert TaskConfig.from_yaml(path).methods == ["sft", "selftrain", "kd"]
    path.write_text("name: t\nlabels: [a, b]\nmethods: [sft]\ndata: {train: t.jsonl, unlabeled: pool.jsonl}\n")
    assert TaskConfig.from_yaml(path).methods == ["sft"]
    path.write_text("name: t\nlabels: [a, b]\ndata: {train: t.jsonl}\n")
    assert TaskConfig.from_yaml(path).methods == ["sft"]


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "../runs", "a\\b", ""])
def test_a_task_name_is_one_folder_name(name):
    from pydantic import ValidationError

    from core.common.config import TaskConfig

    with pytest.raises(ValidationError, match="name"):
        TaskConfig(name=name)
