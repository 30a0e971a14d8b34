"""Training from the frozen layers' cached output (`core.training.frozen_prefix`): the same loss and the same gradients
as from the tokens, on the tiny model with its bottom layer frozen and on the embedded model as the defaults leave it;
off where it cannot hold (every layer trains, a configuration with dropout)."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from core.common.config import LoraSettings
from core.common.rows import Example
from core.model.loading import attach_lora, load_model
from core.settings import ModelSettings
from core.training import sft_trainer
from core.training.frozen_prefix import FrozenPrefixCache
from core.training.sft_trainer import train_sft


def _batch(tokenizer, texts: list[str]) -> dict:
    tokenizer.padding_side = "right"
    return tokenizer(texts, return_tensors="pt", padding=True)


def _loss_and_grads(model, forward, batch) -> tuple[float, dict]:
    out = forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


def test_the_cached_path_gives_the_loss_and_gradients_of_the_tokens(tiny_cfg):
    cfg = tiny_cfg
    model, tokenizer = load_model(cfg.model, ModelSettings())
    model = attach_lora(model, LoraSettings(top_layers=1))  # layer 0 frozen, layer 1 trains
    model.train()
    cache = FrozenPrefixCache.for_model(model, max_bytes=2**20)
    assert cache is not None and cache.first_trained == 1
    batch = _batch(tokenizer, ["Interest rate 7, no delays", "A longer application text with several more tokens in it", "short"])
    assert (batch["attention_mask"] == 0).any()  # padded rows: their states are cached unpadded
    want = _loss_and_grads(model, model, batch)
    assert cache.agrees(model, batch["input_ids"], batch["attention_mask"], use_cache=False)
    for attempt in ("computing the states", "from the cache"):
        loss, grads = _loss_and_grads(model, lambda **kw: cache.forward(model, **kw), batch)
        assert abs(loss - want[0]) < 1e-5, attempt
        assert grads.keys() == want[1].keys()
        assert all(torch.allclose(grads[n], want[1][n], atol=1e-6) for n in grads), attempt
    assert len(cache.states) == 3 and cache.bytes > 0
    # the frozen layer runs again outside the cached forward: the model is untouched
    assert torch.equal(model(**batch).logits, model(**batch).logits)


def test_a_bound_of_zero_bytes_keeps_nothing_and_still_trains_the_same(tiny_cfg):
    model, tokenizer = load_model(tiny_cfg.model, ModelSettings())
    model = attach_lora(model, LoraSettings(top_layers=1))
    cache = FrozenPrefixCache.for_model(model, max_bytes=1)
    batch = _batch(tokenizer, ["one row", "and another row"])
    want = _loss_and_grads(model, model, batch)[0]
    assert abs(_loss_and_grads(model, lambda **kw: cache.forward(model, **kw), batch)[0] - want) < 1e-5
    assert cache.states == {} and cache.bytes == 0


def test_no_cache_where_every_layer_trains_or_the_model_has_dropout(tiny_cfg):
    model, _ = load_model(tiny_cfg.model, ModelSettings())
    assert FrozenPrefixCache.for_model(attach_lora(model, LoraSettings(top_layers=None)), 2**20) is None
    model, _ = load_model(tiny_cfg.model, ModelSettings())
    model.config.attention_dropout = 0.1
    assert FrozenPrefixCache.for_model(attach_lora(model, LoraSettings(top_layers=1)), 2**20) is None


def test_sft_trains_the_same_adapter_with_and_without_the_cache(tiny_cfg, tmp_path, monkeypatch, caplog):
    """The trainer's own path: six steps over repeated rows (the cache's case), once with the cache and once with it off
    (a bound of 0 bytes turns it off before the first batch); the saved adapters are equal."""
    tiny_cfg.training.lora.top_layers = 1
    tiny_cfg.training.max_steps = 6
    rows = [Example(f"r{i}", f"Interest_Rate {i % 5}; Num_of_Loan {i % 3}", ["Good", "Standard", "Bad"][i % 3]) for i in range(6)]
    caplog.set_level("INFO", logger=sft_trainer.__name__)
    cached_dir, stats = train_sft(tiny_cfg, ModelSettings(), rows * 2, tmp_path / "ck1", tmp_path / "cached", progress=False)
    monkeypatch.setattr(sft_trainer, "FROZEN_CACHE_BYTES", 0)
    plain_dir, _ = train_sft(tiny_cfg, ModelSettings(), rows * 2, tmp_path / "ck2", tmp_path / "plain", progress=False)
    said = [r.getMessage() for r in caplog.records if "frozen-layer cache" in r.getMessage()]
    assert said == ["training: frozen-layer cache on", "training: frozen-layer cache off"]
    assert stats.steps == 6
    cached, plain = load_file(cached_dir / "adapter_model.safetensors"), load_file(plain_dir / "adapter_model.safetensors")
    assert cached.keys() == plain.keys() and all("layers.1." in k for k in cached)  # same names: only the top layer trains
    assert all(torch.allclose(cached[k], plain[k], atol=1e-5) for k in cached)


def test_the_embedded_model_as_the_defaults_leave_it_trains_from_the_cache(embedded_dir):
    from core.common.config import TaskConfig

    cfg = TaskConfig()
    model, tokenizer = load_model(cfg.model, ModelSettings())
    model = attach_lora(model, cfg.training.lora)  # the top 10 of 30 layers
    cache = FrozenPrefixCache.for_model(model, 2**24)
    assert cache is not None and cache.first_trained == 20
    batch = _batch(tokenizer, ["Classify: the parcel came two days late.", "ok"])
    assert cache.agrees(model, batch["input_ids"], batch["attention_mask"], use_cache=False)
