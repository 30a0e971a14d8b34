"""The inference engine over a real registry: one base model, adapters beside it, reloads that swap them."""

import pytest

from core.errors import UnknownVariant


def test_serves_base_and_the_production_version_and_names_what_it_serves(engine):
    assert {(v.task, v.name, v.ref) for v in engine.served()} == {
        ("creditmix", "base", "base"),
        ("creditmix", "sft", "sft/v0001"),
        ("creditmix", "production", "sft/v0001"),
    }
    assert engine.get("creditmix", "production").adapter == engine.get("creditmix", "sft").adapter  # one adapter, two names
    base, [p_base] = engine.classify("creditmix", "base", ["Interest_Rate: 25"])
    sft, [p_sft] = engine.classify("creditmix", "sft", ["Interest_Rate: 25"])
    assert base.adapter is None and sft.adapter and p_base.probs != p_sft.probs
    with pytest.raises(
        UnknownVariant, match=r"creditmix:kd is not served; served: \['creditmix:base', 'creditmix:production', 'creditmix:sft'\]"
    ):
        engine.get("creditmix", "kd")
    assert engine.student("creditmix") == "production"


def test_reload_moves_to_the_new_production_version_and_drops_the_old_adapter(engine, registry):
    old = engine.get("creditmix", "sft").adapter
    registry.promote("creditmix", "sft/v0002")
    served = engine.reload()
    assert served["creditmix:sft"] == "sft/v0002" and old not in engine.model.peft_config
    _, [pred] = engine.classify("creditmix", "sft", ["Num_of_Loan: 7"])
    assert pred.label in ("Good", "Standard", "Bad")


def test_only_versions_that_passed_their_gate_are_served_and_aliases_serve_exactly_their_version(engine, registry, tmp_path):
    from core.common.config import TaskConfig
    from tests.conftest import make_adapter

    production = registry.aliases("creditmix")["production"]
    cfg = TaskConfig()
    cfg.model.base_model = engine.model_cfg.base_model if engine.model_cfg else registry.task_config("creditmix").model.base_model
    worse = registry.register("creditmix", "sft", make_adapter(cfg, tmp_path / "a3", 3), {"macro_f1": 0.1}, "", {"eval_sha256": "rows"})
    assert engine.reload()["creditmix:sft"] == production  # never gated: not served
    assert not registry.promote("creditmix", worse).passed
    assert engine.reload()["creditmix:sft"] == production  # refused: still not served
    from core.common.config import PromotionPolicy

    registry.promote("creditmix", worse, PromotionPolicy(guard_min={"macro_f1": 0.5}), alias="staging", force=True)
    served = engine.reload()
    assert served["creditmix:staging"] == worse and served["creditmix:production"] == production  # each alias: its version
    assert engine.get("creditmix", "staging").gate == "forced" and engine.get("creditmix", "production").gate == "passed"


def test_a_reload_attaches_new_adapters_on_the_model_thread_between_requests(engine, registry, tmp_path, monkeypatch):
    """PEFT's attach walks every LoRA layer and switches the active adapter: it runs on the model thread, so a request
    sent meanwhile waits for it (never runs beside it) and is then answered wholly by one version."""
    import threading

    import core.serving.engine as engine_module
    from core.common.config import PromotionPolicy
    from tests.conftest import make_adapter

    cfg = registry.task_config("creditmix")
    fresh = registry.register("creditmix", "sft", make_adapter(cfg, tmp_path / "a9", 9), {"macro_f1": 0.99}, "", {"eval_sha256": "rows"})
    assert registry.promote("creditmix", fresh, PromotionPolicy(guard_min={})).passed
    seen: dict = {"answered": []}
    real = engine_module.load_adapter

    def attach_while_a_request_waits(model, adapter_dir, name):
        seen["thread"] = threading.current_thread().name
        request = threading.Thread(target=lambda: seen["answered"].append(engine.classify("creditmix", "sft", ["Num_of_Loan: 7"])))
        request.start()
        request.join(timeout=2)
        seen["answered_during_attach"], seen["request"] = list(seen["answered"]), request
        return real(model, adapter_dir, name=name)

    monkeypatch.setattr(engine_module, "load_adapter", attach_while_a_request_waits)
    served = engine.reload()
    seen["request"].join(timeout=60)
    assert seen["thread"].startswith("distill-slm-model") and seen["answered_during_attach"] == []
    assert len(seen["answered"]) == 1 and seen["answered"][0][0].ref == fresh  # answered after the swap, by the new version
    assert served["creditmix:sft"] == fresh and engine.get("creditmix", "sft").ref == fresh
