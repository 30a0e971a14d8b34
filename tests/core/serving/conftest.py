"""A real registry of two random adapters on the tiny model, and an engine serving it (module-scoped)."""

import pytest

from core.serving.engine import InferenceEngine
from core.settings import ModelSettings
from tests.conftest import creditmix_versions


@pytest.fixture(scope="module")
def registry(tiny_model_dir, tmp_path_factory):
    registry, _ = creditmix_versions(tiny_model_dir, tmp_path_factory.mktemp("engine"), seeds=(1, 2), eval_sha256="rows")
    registry.promote("creditmix", "sft/v0001")
    return registry


@pytest.fixture(scope="module")
def engine(registry):
    engine = InferenceEngine(str(registry.root), ModelSettings())
    engine.load()
    return engine
