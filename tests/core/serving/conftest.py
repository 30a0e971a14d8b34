"""A real registry of two random adapters on the tiny model, and an engine serving it (module-scoped)."""

import pytest
import yaml

from core.common.config import TaskConfig
from core.registry import Registry
from core.serving.engine import InferenceEngine
from tests.conftest import make_adapter


@pytest.fixture(scope="module")
def registry(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    cfg = TaskConfig()
    cfg.model.base_model = str(tiny_model_dir)
    registry = Registry(root / "runs")
    for seed in (1, 2):
        registry.register(
            "creditmix",
            "sft",
            make_adapter(cfg, root / f"a{seed}", seed),
            {"macro_f1": 0.5},
            yaml.safe_dump(cfg.model_dump(mode="json")),
            {"eval_sha256": "rows"},
        )
    registry.promote("creditmix", "sft/v0001")
    return registry


@pytest.fixture(scope="module")
def engine(registry):
    engine = InferenceEngine(str(registry.root))
    engine.load()
    return engine
