"""The inference engine over a real registry: one base model, adapters beside it, reloads that swap them."""

import threading

import pytest
import yaml

from core.common.config import TaskConfig
from core.errors import UnknownVariant
from core.registry import Registry
from core.serving.batcher import DynamicBatcher
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
            {},
        )
    registry.promote("creditmix", "sft/v0001")
    return registry


@pytest.fixture(scope="module")
def engine(registry):
    engine = InferenceEngine(str(registry.root))
    engine.load()
    return engine


def test_serves_base_and_the_production_version_and_names_what_it_serves(engine):
    assert {(v.task, v.name, v.ref) for v in engine.served()} == {("creditmix", "base", "base"), ("creditmix", "sft", "sft/v0001")}
    base, [p_base] = engine.classify("creditmix", "base", ["Interest_Rate: 25"])
    sft, [p_sft] = engine.classify("creditmix", "sft", ["Interest_Rate: 25"])
    assert base.adapter is None and sft.adapter and p_base.probs != p_sft.probs
    with pytest.raises(UnknownVariant, match=r"creditmix:kd is not served; served: \['creditmix:base', 'creditmix:sft'\]"):
        engine.get("creditmix", "kd")
    assert engine.student("creditmix") == "sft"


def test_reload_moves_to_the_new_production_version_and_drops_the_old_adapter(engine, registry):
    old = engine.get("creditmix", "sft").adapter
    registry.promote("creditmix", "sft/v0002")
    served = engine.reload()
    assert served["creditmix:sft"] == "sft/v0002" and old not in engine.model.peft_config
    _, [pred] = engine.classify("creditmix", "sft", ["Num_of_Loan: 7"])
    assert pred.label in ("Good", "Standard", "Bad")


def test_the_batcher_scores_concurrent_requests_together_and_returns_errors_to_their_callers(engine):
    sizes = []
    batcher = DynamicBatcher(engine, max_batch=8, max_wait_ms=200, on_batch=lambda task, variant, n: sizes.append(n))
    answers, errors = [], []

    def ask(variant):
        try:
            answers.append(batcher.classify("creditmix", variant, f"Interest_Rate: {len(answers)}"))
        except UnknownVariant as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=("sft",)) for _ in range(6)] + [threading.Thread(target=ask, args=("dpo",))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert len(answers) == 6 and len(errors) == 1 and max(sizes) > 1
    assert all(variant.name == "sft" for variant, _ in answers)
