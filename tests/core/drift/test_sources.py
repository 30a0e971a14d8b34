"""`ask_teacher`: the teacher's agreement with production answers of a window, within the sample and the night's budget.

The teacher here stands in for the large model (it answers from a table and records what it is asked): what is tested is
what drift asks, counts and pays, through the real trace store."""

from core.common.config import Price, TaskConfig
from core.drift.sources import ask_teacher
from core.drift.windows import Window
from core.errors import TeacherUnavailable
from core.kinds import for_config
from core.settings import ModelSettings
from core.teachers.base import Teacher, TeacherAnswer


class Table(Teacher):
    name = "big"

    def __init__(self, answers: dict[str, str | None]) -> None:
        self.answers, self.asked = answers, []

    def answer(self, texts: list[str]) -> list[TeacherAnswer]:
        self.asked.extend(texts)
        return [
            TeacherAnswer(self.answers[t], prompt_tokens=100, completion_tokens=1)
            if self.answers[t] is not None
            else TeacherAnswer(None, error="unreadable: no label")
            for t in texts
        ]


def window_of(answers: list[tuple[str | None, str]]) -> Window:
    window = Window("creditmix", "sft/v1", view=lambda record: record, sample_size=100)
    window.answers = [(text, {"label": label, "confidence": 0.9}) for text, label in answers]
    return window


def test_agreement_counts_the_sampled_answers_the_teacher_gave(tmp_path):
    cfg = TaskConfig()
    cfg.drift.teacher_sample = 3
    production = [("a", "Good"), (None, "Good"), ("b", "Bad"), ("c", "Standard"), ("d", "Good")]
    teacher = Table({"a": "Good", "b": "Good", "c": "Standard", "d": "Bad"})
    agreement, note, cost = ask_teacher(cfg, for_config(cfg, ModelSettings()), window_of(production), tmp_path / "t.jsonl", lambda: teacher)
    # a redacted input (None) is never sent; the sample is the first three kept inputs: a and c agree, b does not
    assert teacher.asked == ["a", "b", "c"] and agreement == (2, 3) and note is None and cost == 0.0


def test_the_nights_budget_caps_the_sample_and_the_cost_is_reported(tmp_path):
    cfg = TaskConfig()
    cfg.teacher.model, cfg.teacher.prices = "big", {"big": Price(prompt=1000.0)}  # ~0.2 USD an answer as estimated
    cfg.drift.teacher_sample, cfg.drift.teacher_budget_usd = 10, 0.5
    teacher = Table({t: "Good" for t in "abcdef"})
    agreement, note, cost = ask_teacher(
        cfg, for_config(cfg, ModelSettings()), window_of([(t, "Good") for t in "abcdef"]), tmp_path / "t.jsonl", lambda: teacher
    )
    assert teacher.asked == ["a", "b"] and agreement == (2, 2) and note is None
    assert cost == 2 * 100 * 1000.0 / 1e6  # the tokens the teacher reported, at its price


def test_a_teacher_that_is_down_or_answers_nothing_leaves_agreement_unknown(tmp_path):
    cfg = TaskConfig()
    kind = for_config(cfg, ModelSettings())

    def down() -> Teacher:
        raise TeacherUnavailable("connection refused")

    agreement, note, _ = ask_teacher(cfg, kind, window_of([("a", "Good")]), tmp_path / "1.jsonl", down)
    assert agreement is None and note == "teacher unavailable: connection refused"
    agreement, note, _ = ask_teacher(cfg, kind, window_of([("a", "Good")]), tmp_path / "2.jsonl", lambda: Table({"a": None}))
    assert agreement is None and note.startswith("the teacher answered none of 1 inputs") and "unreadable" in note
    cfg.drift.teacher_sample = 0
    assert (
        ask_teacher(cfg, kind, window_of([("a", "Good")]), tmp_path / "3.jsonl", down)[1]
        == "drift.teacher_sample is 0 or no input was kept"
    )
    cfg.drift.teacher_sample = 5
    assert ask_teacher(cfg, kind, window_of([(None, "Good")]), tmp_path / "4.jsonl", down)[1] == "no inputs logged"


def test_cached_answers_are_not_asked_again(tmp_path):
    cfg = TaskConfig()
    kind, traces = for_config(cfg, ModelSettings()), tmp_path / "t.jsonl"
    first = Table({"a": "Good", "b": "Bad"})
    ask_teacher(cfg, kind, window_of([("a", "Good"), ("b", "Good")]), traces, lambda: first)
    second = Table({"a": "Good", "b": "Bad", "c": "Good"})
    agreement, _, _ = ask_teacher(cfg, kind, window_of([("a", "Good"), ("b", "Good"), ("c", "Good")]), traces, lambda: second)
    assert second.asked == ["c"] and agreement == (2, 3)
