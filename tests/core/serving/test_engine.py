"""The inference engine over a real registry: one base model, adapters beside it, reloads that swap them."""

import pytest

from core.errors import UnknownVariant


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
