"""Export: the adapter and the merged model load in plain PEFT / transformers and answer as the served variant does;
export.json names the base by its weights' hash; an existing folder is never overwritten."""

import json
import subprocess
import sys

import pytest
import torch
import yaml
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.common.config import TaskConfig
from core.model.export import weights_sha256
from core.model.loading import load_model
from core.registry import Registry
from core.settings import ModelSettings
from tests.conftest import make_adapter


@pytest.fixture(scope="module")
def registry(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    cfg = TaskConfig(name="creditmix")
    cfg.model.base_model = str(tiny_model_dir)
    registry = Registry(root / "runs")
    registry.register(
        "creditmix", "sft", make_adapter(cfg, root / "adapter", 7), {"macro_f1": 0.5}, yaml.safe_dump(cfg.model_dump(mode="json")), {}
    )
    registry.promote("creditmix", "sft/v0001", force=True)
    return registry


def _export(registry: Registry, out) -> subprocess.CompletedProcess:
    """`distill-slm registry export creditmix production --to OUT`, in its own process."""
    command = ["registry", "export", "creditmix", "production", "--to", str(out), "--runs-dir", str(registry.root)]
    return subprocess.run([sys.executable, "-m", "distill_slm.cli", *command], capture_output=True, text=True)


def test_the_exported_forms_answer_as_the_registered_adapter(registry, tiny_model_dir, tmp_path):
    out = tmp_path / "export"
    done = _export(registry, out)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["version"] == "sft/v0001" and manifest["base_model_sha256"] == weights_sha256(tiny_model_dir)
    assert manifest["written"]["gguf"].startswith("not written") and "--lora-modules creditmix=adapter" in manifest["load"]["vllm"]
    cfg = registry.task_config("creditmix", "sft/v0001")
    served, tokenizer = load_model(cfg.model, ModelSettings(), adapter=registry.path("creditmix", "sft/v0001"))
    ids = tokenizer(["Interest_Rate: 25; Num_Bank_Accounts: 3"], return_tensors="pt").input_ids
    with torch.no_grad():
        want = served(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out / "merged")
        assert torch.allclose(merged(ids).logits, want, atol=1e-4)  # no PEFT needed
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "adapter")
        assert torch.allclose(peft(ids).logits, want, atol=1e-5)
    assert AutoTokenizer.from_pretrained(out / "merged")("x").input_ids == tokenizer("x").input_ids
    again = _export(registry, out)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no half-written folder left beside it
