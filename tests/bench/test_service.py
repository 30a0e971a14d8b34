"""bench service's pieces: a registry's production adapter copied as other methods' versions (the memory side serves
several), and a process's resident memory read from /proc."""

import os

from bench.service import _copy_production, _status_mb
from core.registry import Registry
from tests.conftest import creditmix_versions


def test_the_production_adapter_is_registered_again_as_each_method(tiny_model_dir, tmp_path):
    source, _ = creditmix_versions(tiny_model_dir, tmp_path / "source", seeds=(1, 2))
    source.promote("creditmix", "sft/v0002", force=True)
    target = Registry(tmp_path / "target")
    refs = [_copy_production(source, target, "creditmix", method) for method in ("sft", "kd")]
    assert refs == ["sft/v0001", "kd/v0001"]
    copied = (target.path("creditmix", "kd/v0001") / "adapter_model.safetensors").read_bytes()
    assert copied == (source.path("creditmix", "sft/v0002") / "adapter_model.safetensors").read_bytes()
    assert target.metrics("creditmix", "kd/v0001")["macro_f1"] == source.metrics("creditmix", "sft/v0002")["macro_f1"]


def test_resident_memory_is_read_in_megabytes_with_its_peak():
    memory = _status_mb(os.getpid())
    assert 0 < memory["VmRSS"] <= memory["VmHWM"]
