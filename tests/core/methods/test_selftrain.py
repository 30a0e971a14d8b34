"""Self-training's choices: which labeler mode labels the pool, and the settings each mode runs under."""

from core.common.config import TaskConfig
from core.common.rows import Example, text_sha256
from core.methods.selftrain import LABELER_MODES, choose_labeler, labeler_config
from core.settings import ModelSettings


def test_the_labeler_that_is_right_more_often_on_validation_labels_the_pool():
    cfg = TaskConfig()
    rows = [Example(f"v{i}", f"text {i}", label) for i, label in enumerate(["Good", "Standard", "Bad", "Good"])]

    def answers(right: int) -> dict:
        wrong = {"Good": "Bad", "Standard": "Good", "Bad": "Standard"}
        return {
            text_sha256(r.text): {
                "output": r.label if i < right else wrong[r.label],
                "label_probs": {r.label: 0.8},
                "latency_s": 0.1,
                "prompt_tokens": 10,
                "completion_tokens": 1,
                "teacher": "labeler",
            }
            for i, r in enumerate(rows)
        }

    choice = choose_labeler(cfg, ModelSettings(), rows, {"deliberate": answers(1), "zero-shot": answers(4)})
    assert choice["mode"] == "zero-shot" and choice["validation"]["zero-shot"] == 1.0 > choice["validation"]["deliberate"]
    assert (
        choose_labeler(cfg, ModelSettings(), rows, {"deliberate": answers(4), "zero-shot": answers(4)})["mode"] == "deliberate"
    )  # a tie: the first


def test_each_labeler_mode_runs_this_runs_adapter_under_its_own_backend():
    cfg = TaskConfig(teacher={"backend": "openai", "model": "big"})
    assert LABELER_MODES == ("deliberate", "zero-shot")
    assert labeler_config(cfg, zero_shot=False).teacher.backend == "deliberate"
    zero = labeler_config(cfg, zero_shot=True).teacher
    assert zero.backend == "hf" and zero.model == cfg.model.base_model
    assert cfg.teacher.backend == "openai"  # the run's own teacher is left as it was
