"""What each method needs of the others, declared once (`TaskConfig.needs`), and the order a run walks them in."""

import pytest

from core.common.config import TaskConfig
from core.errors import ConfigError
from core.methods import METHODS, check, order, waves


def test_every_method_comes_after_what_it_needs_whatever_order_the_task_file_lists():
    cfg = TaskConfig(methods=["dpo", "kd", "selftrain", "sft"])
    cfg.teacher.backend = "deliberate"
    assert cfg.needs("selftrain") == ("sft",) and cfg.needs("dpo") == ("sft",) and cfg.needs("kd") == ("sft",)
    assert order(cfg) == ["sft", "selftrain", "kd", "dpo"]
    # KD from a remote teacher needs nothing of this run; DPO from the base neither.
    cfg = TaskConfig(methods=["dpo", "kd"], dpo={"from_sft": False}, teacher={"backend": "openai", "model": "m"})
    assert cfg.needs("kd") == () and cfg.needs("dpo") == () and order(cfg) == ["kd", "dpo"]
    assert set(METHODS) == {"sft", "selftrain", "kd", "dpo"}


def test_waves_hold_the_methods_that_may_train_side_by_side():
    everything = TaskConfig(methods=["dpo", "kd", "selftrain", "sft"])  # the embedded teacher runs the SFT adapter
    assert waves(everything) == [["sft"], ["selftrain", "kd"], ["dpo"]]  # DPO after KD: its pairs use KD's traces
    remote = TaskConfig(methods=["sft", "kd", "dpo"], dpo={"from_sft": False}, teacher={"backend": "openai", "model": "m"})
    assert waves(remote) == [["sft", "kd"], ["dpo"]]
    assert waves(TaskConfig(methods=["sft", "dpo"], dpo={"from_sft": False})) == [["sft", "dpo"]]
    assert waves(TaskConfig()) == [["sft"]]


@pytest.mark.parametrize(
    "methods, extra, message",
    [
        (["selftrain"], {}, "selftrain labels the pool with this run's SFT adapter: add 'sft' to methods"),
        (["dpo"], {}, "dpo.from_sft starts DPO from this run's SFT adapter: add 'sft' to methods or set dpo.from_sft: false"),
    ],
)
def test_a_need_missing_from_methods_is_refused_naming_what_to_add(methods, extra, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        TaskConfig(methods=methods, **extra)


def test_selftrain_is_refused_before_any_data_for_a_type_without_confidences():
    cfg = TaskConfig(type="idp", methods=["sft", "selftrain"])
    with pytest.raises(ConfigError, match="selftrain needs answers with a calibrated confidence; task type 'idp'"):
        check(cfg)
    check(TaskConfig(methods=["sft", "selftrain"]))  # classification's answers carry a confidence
