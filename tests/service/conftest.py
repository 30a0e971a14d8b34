"""A real service for the tests in this folder: uvicorn on a loopback port over a registry of two
adapters (random LoRA weights on the tiny model), started once per session."""

import pytest
import torch
import yaml

from core.config import LoraSettings
from core.models import attach_lora, load_model
from core.registry import Registry
from service.main import serve_in_thread
from service.settings import Settings

ADMIN_KEY = "test-admin-key"


def make_adapter(cfg, out, seed):
    model, _ = load_model(cfg.model)
    peft_model = attach_lora(model, LoraSettings(r=4, top_layers=None))
    torch.manual_seed(seed)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def server(tiny_model_dir, tmp_path_factory):
    from core.config import TaskConfig

    root = tmp_path_factory.mktemp("service")
    cfg = TaskConfig()
    cfg.model.base_model = str(tiny_model_dir)
    registry = Registry(root / "runs")
    config_yaml = yaml.safe_dump(cfg.model_dump(mode="json"))
    for seed in (1, 2):
        adapter = make_adapter(cfg, root / f"adapter{seed}", seed)
        registry.register("creditmix", "sft", adapter, {"macro_f1": 0.5 + seed / 10}, config_yaml, {})
    registry.promote("creditmix", "sft/v0001")
    settings = Settings(runs_dir=root / "runs", admin_api_keys=[ADMIN_KEY], audit_log=root / "audit" / "audit.jsonl")
    srv, base = serve_in_thread(settings)
    yield {"url": base, "registry": registry, "settings": settings}
    srv.should_exit = True


