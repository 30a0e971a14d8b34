"""The deliberate teacher (retrieved k-shot examples, votes) on the embedded model."""

import pytest

from core.common.config import TaskConfig
from core.common.rows import Example
from core.kinds import for_config
from core.settings import ModelSettings
from core.teachers.deliberate import DeliberateTeacher


@pytest.mark.slow
def test_deliberate_teacher_on_the_embedded_model():
    from demos import creditmix

    rows = [Example(**r) for r in creditmix.generate(40, seed=3)]
    cfg = TaskConfig()
    teacher = DeliberateTeacher(cfg, for_config(cfg, ModelSettings()).teacher_task(), ModelSettings(), rows[:36])
    answers = teacher.answer([r.text for r in rows[36:38]])
    for answer in answers:
        # The answer is the label its own (voted, retrieval-mixed) distribution ranks first, and that distribution sums to 1.
        assert answer.output == max(answer.label_probs, key=answer.label_probs.get) and set(answer.label_probs) == set(cfg.labels)
        assert abs(sum(answer.label_probs.values()) - 1) < 1e-6
        assert len(answer.extra["votes"]) == cfg.teacher.votes
        # k shots per vote, twice (the input and its content-free twin): several hundred prompt tokens
        assert answer.prompt_tokens > 4 * cfg.teacher.votes * 40
    # The retrieval histogram counts: with retrieval weight 1, the answer is the neighbours' majority.
    teacher.weight = 1.0
    [answer] = teacher.answer([rows[36].text])
    assert max(answer.label_probs.values()) == answer.label_probs[answer.output]
