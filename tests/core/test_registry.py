import json
import os
from pathlib import Path

import pytest

from core.common.config import PromotionPolicy
from core.registry import Registry, RegistryError


@pytest.fixture
def adapter(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "adapter_config.json").write_text("{}")
    return folder


def register(reg, adapter, f1, method="sft", rows="x", **extra):
    return reg.register("t", method, adapter, {"macro_f1": f1, "min_class_recall": 0.6, **extra}, "name: t\n", {"eval_sha256": rows})


def test_versions_are_numbered_and_complete(tmp_path, adapter):
    reg = Registry(tmp_path / "runs")
    assert register(reg, adapter, 0.5) == "sft/v0001"
    assert register(reg, adapter, 0.6) == "sft/v0002"
    assert reg.versions("t", "sft") == ["v0001", "v0002"]
    folder = reg.path("t", "sft/v0002")
    assert {p.name for p in folder.iterdir()} >= {
        "adapter_model.safetensors",
        "metrics.json",
        "config.yaml",
        "data_fingerprint.json",
        "README.md",
    }
    assert reg.resolve("t", "sft") == "sft/v0002"


def test_gate_promotes_only_a_better_candidate_and_rollback_restores(tmp_path, adapter):
    reg = Registry(tmp_path / "runs")
    first, worse, better = register(reg, adapter, 0.70), register(reg, adapter, 0.69), register(reg, adapter, 0.80)
    assert reg.promote("t", first, PromotionPolicy(min_gain=0.05, guard_min={})).passed
    refused = reg.promote("t", worse, PromotionPolicy(min_gain=0.05, guard_min={}))
    assert not refused.passed and "does not beat" in refused.reasons[0]
    assert reg.aliases("t") == {"production": first}
    assert reg.promote("t", better, PromotionPolicy(min_gain=0.05, guard_min={})).passed
    assert reg.aliases("t")["production"] == better
    assert reg.rollback("t") == first
    assert reg.aliases("t")["production"] == first
    assert reg.rollback("t") is None
    with pytest.raises(RegistryError):
        reg.rollback("t")


def test_the_gate_compares_on_the_candidates_rows_or_refuses_to_compare(tmp_path, adapter):
    """An incumbent scored on other rows is not compared by its stored figure: the caller measures it on the candidate's
    rows (the distill flow does), or the gate says why it cannot compare. The move records both figures and the rows."""
    reg = Registry(tmp_path / "runs")
    first = register(reg, adapter, 0.90, rows="old-rows")
    assert reg.promote("t", first).passed
    other = register(reg, adapter, 0.80, rows="new-rows")  # lower, but on harder rows than the incumbent's 0.90
    refused = reg.promote("t", other)
    assert not refused.passed and "was evaluated on other rows" in refused.reasons[0] and reg.aliases("t")["production"] == first
    passed = reg.promote("t", other, incumbent_metrics={"macro_f1": 0.75})  # the incumbent on the new rows
    assert passed.passed and (passed.candidate_value, passed.incumbent_value, passed.eval_sha256) == (0.80, 0.75, "new-rows")
    moved = reg.describe("t")["history"][-1]
    assert moved["gate"] == {"metric": "macro_f1", "candidate_value": 0.80, "incumbent_value": 0.75, "eval_sha256": "new-rows"}


def test_guards_block_promotion(tmp_path, adapter):
    reg = Registry(tmp_path / "runs")
    ref = register(reg, adapter, 0.9, ece=0.4)
    decision = reg.promote("t", ref, PromotionPolicy(guard_min={"min_class_recall": 0.7}, guard_max={"ece": 0.2}))
    assert not decision.passed
    assert [r.split()[1] for r in decision.reasons[:2]] == ["min_class_recall=0.6", "ece=0.4"]
    assert reg.aliases("t") == {}
    assert reg.promote("t", ref, PromotionPolicy(guard_min={"min_class_recall": 0.7}), force=True).passed


def test_interrupted_register_leaves_previous_state(tmp_path, adapter, monkeypatch):
    reg = Registry(tmp_path / "runs")
    register(reg, adapter, 0.5)
    reg.promote("t", "sft/v0001")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr("core.registry.os.rename", crash)
    with pytest.raises(KeyboardInterrupt):
        register(reg, adapter, 0.9)
    monkeypatch.undo()
    assert reg.versions("t", "sft") == ["v0001"]
    assert not [p for p in (tmp_path / "runs" / "t" / "sft").iterdir() if p.name.startswith(".incoming")]
    assert register(reg, adapter, 0.9) == "sft/v0002"


def test_interrupted_alias_write_keeps_old_alias_file(tmp_path, adapter, monkeypatch):
    reg = Registry(tmp_path / "runs")
    register(reg, adapter, 0.5)
    register(reg, adapter, 0.9)
    reg.promote("t", "sft/v0001")
    before = (tmp_path / "runs" / "t" / "aliases.json").read_text()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr("core.registry.os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        reg.promote("t", "sft/v0002")
    monkeypatch.undo()
    assert (tmp_path / "runs" / "t" / "aliases.json").read_text() == before
    assert json.loads(before)["stacks"]["production"] == ["sft/v0001"]
    assert not [p for p in os.listdir(tmp_path / "runs" / "t") if p.startswith(".aliases.json.")]


def test_describe_lists_methods_versions_metrics(tmp_path, adapter):
    reg = Registry(tmp_path / "runs")
    register(reg, adapter, 0.5)
    info = reg.describe("t")
    assert info["methods"]["sft"][0] == {"version": "v0001", "metrics": {"macro_f1": 0.5, "min_class_recall": 0.6}}
    with pytest.raises(RegistryError, match="no version"):
        reg.resolve("t", "sft/v0009")


REGISTER_AND_PROMOTE = """
import json, sys
from core.common.config import PromotionPolicy
from core.registry import Registry
reg, adapter = Registry(sys.argv[1]), sys.argv[2]
print("ready", flush=True)
for i in range(1000):
    ref = reg.register("t", ("sft", "kd")[i % 2], adapter, {"macro_f1": 0.5 + (i % 7) / 100}, "name: t\\n", {"eval_sha256": "x"})
    reg.promote("t", ref, PromotionPolicy(guard_min={}))
"""


def test_a_registry_killed_mid_write_is_the_old_state_or_the_new_one(tmp_path, adapter):
    """12 SIGKILLs at seeded random moments of a process registering and promoting in a loop: after each, every version
    folder is complete and the alias file parses and names existing versions; `registry show` reads the result."""
    import random
    import subprocess
    import sys

    from tests.conftest import kill_at_random_moment

    rng = random.Random(20261124)
    script = tmp_path / "loop.py"
    script.write_text(REGISTER_AND_PROMOTE)
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for _ in range(12):
        kill_at_random_moment([str(script), str(runs), str(adapter)], "ready", rng, 1.5, "registry", env)
        reg = Registry(runs)
        for method in reg.methods("t"):
            for version in reg.versions("t", method):
                folder = reg.path("t", f"{method}/{version}")
                assert {"adapter_model.safetensors", "metrics.json", "config.yaml", "data_fingerprint.json", "README.md"} <= {
                    p.name for p in folder.iterdir()
                }, folder
                json.loads((folder / "metrics.json").read_text())
        for alias, ref in reg.aliases("t").items():
            assert reg.path("t", ref).exists(), (alias, ref)
        assert reg.describe("t")["aliases"] == reg.aliases("t")  # what `registry show` and the service read
    shown = subprocess.run(
        [sys.executable, "-m", "distill_slm.cli", "registry", "show", "t", "--runs-dir", str(runs), "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert shown.returncode == 0, shown.stderr
    assert sum(len(Registry(runs).versions("t", m)) for m in ("sft", "kd")) > 5  # the kills landed mid-loop, many times


def test_one_run_promotes_its_best_adapter_unless_the_lead_over_sft_is_within_the_draw_of_the_rows(tmp_path, adapter):
    """`promote_best` moves the alias once, to the best passing candidate; a candidate whose paired interval over the
    run's SFT adapter reaches zero (`core.evaluation.paired`) does not displace SFT, and both decisions say why."""
    reg = Registry(tmp_path / "runs")
    paired = lambda low: {"reference": "sft", "metric": "macro_f1", "gain": 0.04, "interval": [low, 0.09], "level": 0.95}  # noqa: E731
    sft = register(reg, adapter, 0.70)
    noisy = register(reg, adapter, 0.74, method="selftrain", paired=paired(-0.01))
    first = reg.promote_best("t", [sft, noisy], PromotionPolicy(guard_min={}))
    assert [d.promoted for d in first] == [True, False]
    assert "kept over selftrain/v0001" in first[0].reasons[-1] and "within the draw of the rows" in first[0].reasons[-1]
    assert "its lead is not clear" in " ".join(first[1].reasons)
    assert reg.aliases("t")["production"] == sft

    sft2 = register(reg, adapter, 0.70)
    clear = register(reg, adapter, 0.80, method="kd", paired=paired(0.02))
    second = reg.promote_best("t", [sft2, clear], PromotionPolicy(guard_min={}))
    assert [d.promoted for d in second] == [False, True]
    assert reg.aliases("t")["production"] == clear

    # Without a passing reference in the run there is nothing to keep: the best passing candidate is promoted.
    lone = register(reg, adapter, 0.85, method="selftrain", paired=paired(-0.05))
    assert reg.promote_best("t", [lone], PromotionPolicy(guard_min={}))[0].promoted
