"""The size rule: a large split gets one pass, a small one several (up to the cap); explicit settings win."""

from core.common.config import TrainingConfig
from core.training.recipe import plan_steps


def test_a_large_split_gets_one_pass_and_a_small_one_enough_passes_for_the_minimum_steps():
    t = TrainingConfig()  # batch 8, min_steps 500, max_epochs 8
    assert plan_steps(t, 8000).epochs == 1.0 and plan_steps(t, 8000).steps == 1000  # never less than one pass
    large = plan_steps(t, 2400)
    assert large.steps == 500 and large.eval_steps == 50
    assert plan_steps(t, 450).epochs == 8.0 and plan_steps(t, 450).steps == 456  # capped at max_epochs


def test_explicit_epochs_and_max_steps_override_the_rule():
    assert plan_steps(TrainingConfig(epochs=2), 450).epochs == 2.0
    assert plan_steps(TrainingConfig(), 450, epochs=1.5).steps == 86
    assert plan_steps(TrainingConfig(max_steps=7, eval_steps=3), 450).steps == 7
    assert plan_steps(TrainingConfig(max_steps=7, eval_steps=3), 450).eval_steps == 3
