"""The local `hf` teacher: a model on disk answers through the task kind's teaching; a missing one is refused by name."""

from __future__ import annotations

import pytest

from core.errors import TeacherUnavailable
from core.kinds import for_config
from core.settings import ModelSettings
from core.teachers.hf import HFTeacher, adapter_label, check_hf_source


def test_a_local_model_answers_with_a_label_distribution(tiny_cfg, tiny_model_dir):
    tiny_cfg.teacher.backend, tiny_cfg.teacher.model = "hf", str(tiny_model_dir)
    teacher = HFTeacher(tiny_cfg, for_config(tiny_cfg, ModelSettings()).teacher_task(), ModelSettings())
    answers = teacher.answer(["Num_Bank_Accounts: 3; Outstanding_Debt: 800", "Num_Bank_Accounts: 9"])
    assert teacher.name == f"hf:{tiny_model_dir}" and len(answers) == 2
    for answer in answers:
        assert answer.output in tiny_cfg.labels and answer.error is None
        assert sum(answer.label_probs.values()) == pytest.approx(1.0) and answer.output == max(
            answer.label_probs, key=answer.label_probs.get
        )


def test_a_model_neither_on_disk_nor_reachable_is_refused_naming_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TeacherUnavailable, match=r"teacher.model: 'org/missing-model' is not a local folder"):
        check_hf_source("org/missing-model", ModelSettings())
    check_hf_source(str(tmp_path), ModelSettings())  # a folder on disk is fine, as is the embedded model
    check_hf_source("embedded", ModelSettings())


def test_traces_name_the_run_whose_adapter_answered(tmp_path):
    assert adapter_label(tmp_path / "sft-1a2b3c" / "adapter") == "sft-1a2b3c"
    assert adapter_label(tmp_path / "v0003") == "v0003"
