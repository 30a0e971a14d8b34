"""bench gpu: on a machine without CUDA it says so and measures nothing; its larger base is a real model of the family."""

import torch

import bench.gpu as gpu
from core.common.config import ModelConfig
from core.model.loading import load_model
from core.settings import ModelSettings


def test_without_a_gpu_it_says_so_and_measures_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.json"
    figures = gpu.run(quick=True, out=out)
    assert set(figures) == {"skipped"} and "no CUDA device" in figures["skipped"] and not out.exists()


def test_the_larger_base_is_the_embedded_family_at_another_shape_and_loads_like_any_local_folder(monkeypatch, tmp_path):
    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
    monkeypatch.setattr(gpu, "LARGER_SHAPE", shape)
    folder, parameters = gpu._larger_base(tmp_path / "larger")
    model, tokenizer = load_model(ModelConfig(base_model=str(folder), device="cpu"), ModelSettings())
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)  # the embedded chat format came along
