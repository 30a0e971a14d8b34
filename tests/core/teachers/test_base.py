"""What every teacher backend relies on: each task kind's `TeacherTask` reads an endpoint's reply into a `TeacherAnswer`
that keeps the reply's cost whether or not it can be trained on, and the base classes' defaults."""

import json

import pytest

from core.common.config import TaskConfig
from core.kinds import for_config
from core.settings import ModelSettings
from core.teachers.base import Teacher, TeacherAnswer, TeacherTask
from demos.invoices import generate as generate_documents

GOOD_REPLY = {
    "classification": "Bad",
    "idp": json.dumps(generate_documents(1, seed=1)[0]["target"]),  # a document's gold JSON validates
    "codegen": "Plan: add.\n```python\ndef add(a, b):\n    return a + b\n```",
}
BAD_REPLY = {"classification": "Excellent!", "idp": "{not json", "codegen": None}  # codegen: its tests judge, not the reader


@pytest.mark.parametrize("task_type", ["classification", "idp", "codegen"])
def test_each_kind_reads_a_reply_keeping_its_cost_and_says_why_one_is_unusable(task_type):
    task = for_config(TaskConfig(type=task_type), ModelSettings()).teacher_task()
    assert isinstance(task, TeacherTask)
    json.dumps(task.request())  # merged into every chat-completion body: plain JSON
    good = task.read_reply(GOOD_REPLY[task_type], [], 0.25, 40, 7)
    assert good.output is not None and good.error is None
    assert (good.latency_s, good.prompt_tokens, good.completion_tokens) == (0.25, 40, 7)
    if BAD_REPLY[task_type] is not None:
        bad = task.read_reply(BAD_REPLY[task_type], [], 0.5, 40, 3)
        assert bad.output is None and bad.error  # never trained on, and the reason is kept
        assert (bad.prompt_tokens, bad.completion_tokens) == (40, 3)  # an unusable answer was still paid for


def test_a_label_reply_spreads_the_first_tokens_alternatives_over_the_labels_they_start():
    task = for_config(TaskConfig(), ModelSettings()).teacher_task()  # labels Good, Standard, Bad
    top = [[["Stand", -0.5], ["Good", -1.5], ["Maybe", -0.1]]]
    answer = task.read_reply("Standard", top, 0.1, 10, 1)
    assert answer.output == "Standard" and answer.top_logprobs == top
    assert set(answer.label_probs) == {"Good", "Standard", "Bad"} and answer.label_probs["Standard"] > answer.label_probs["Good"]
    assert sum(answer.label_probs.values()) == pytest.approx(1.0)


class _Echo(TeacherTask):
    def request(self) -> dict:
        return {}

    def read_reply(self, content, top, latency_s, prompt_tokens, completion_tokens) -> TeacherAnswer:
        return TeacherAnswer(content)

    def attach(self, model, tokenizer, calibrated, adapter=None) -> None: ...

    def answer(self, texts, top_k):
        return [TeacherAnswer(t) for t in texts]

    def deliberate(self, texts, shot_sets, neighbours, top_k):
        return self.answer(texts, top_k)


def test_the_defaults_take_the_first_candidate_and_store_every_answer_unchecked():
    task = _Echo()
    first, second = TeacherAnswer("a"), TeacherAnswer("b")
    assert task.combine([first, second]) is first
    assert task.check([], [first, second]) == [first, second]


def test_a_teacher_answers_one_input_through_its_batch_call_and_a_bare_teacher_answers_nothing():
    class Upper(Teacher):
        def answer(self, texts):
            return [TeacherAnswer(t.upper()) for t in texts]

    assert Upper().answer_one("bad").output == "BAD"
    with pytest.raises(NotImplementedError):
        Teacher().answer_one("x")
