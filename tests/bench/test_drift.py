"""bench drift's registry: a production version over a 2-layer model built from the embedded config, served as any other."""

from bench.drift import TASK, tiny_registry
from core.registry import Registry
from core.serving.engine import InferenceEngine
from core.settings import ModelSettings


def test_the_tiny_registry_serves_a_production_version_that_answers(tmp_path):
    runs = tiny_registry(tmp_path)
    registry = Registry(runs)
    assert registry.aliases(TASK)["production"] == "sft/v0001"
    assert registry.task_config(TASK, "production").model.base_model == str(tmp_path / "tiny-model")
    engine = InferenceEngine(str(runs), ModelSettings())
    engine.load()
    try:
        assert (TASK, "production") in engine.variants
    finally:
        engine.close()
