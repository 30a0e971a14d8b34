import json

import pytest

from core.common.records import Example
from core.errors import DataError
from core.training.sft import CompletionSFTTrainer, train_sft
from demos import creditmix


def rows(n):
    return [Example(**r) for r in creditmix.generate(n, seed=5)]


def test_interrupted_training_resumes_from_last_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    tiny_cfg.training.max_steps = 4
    original = CompletionSFTTrainer.training_step
    calls = {"n": 0}

    def dies_on_third_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("power cut")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CompletionSFTTrainer, "training_step", dies_on_third_step)
    with pytest.raises(KeyboardInterrupt):
        train_sft(tiny_cfg, rows(16), tmp_path / "ckpt", tmp_path / "adapter", progress=False)
    assert (tmp_path / "ckpt" / "checkpoint-2").is_dir()
    assert not (tmp_path / "adapter").exists()
    monkeypatch.undo()

    adapter, stats = train_sft(tiny_cfg, rows(16), tmp_path / "ckpt", tmp_path / "adapter", progress=False)
    assert stats.resumed_from.endswith("checkpoint-2")
    assert stats.steps == 4
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == tiny_cfg.training.lora.r
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0


def test_rows_over_max_length_are_refused_not_truncated(tiny_cfg, tmp_path):
    tiny_cfg.training.max_length = 40
    with pytest.raises(DataError) as err:
        train_sft(tiny_cfg, rows(4), tmp_path / "ckpt", tmp_path / "adapter", source="train.jsonl")
    assert err.value.line == 1 and err.value.field == "text" and "max_length=40" in str(err.value)


def test_qlora_trains_on_a_4bit_base(tiny_cfg, tmp_path):
    tiny_cfg.model.quantization = "nf4"
    tiny_cfg.training.max_steps = 1
    adapter, stats = train_sft(tiny_cfg, rows(4), tmp_path / "ckpt", tmp_path / "adapter", progress=False)
    assert stats.steps == 1
    assert (adapter / "adapter_model.safetensors").exists()


def test_completion_only_projection_gives_the_full_logits_loss(tiny_cfg, tmp_path):
    import torch
    import torch.nn.functional as F

    from core.model.loading import load_model, lora_config
    from core.training.sft import sft_config, sft_dataset

    model, tokenizer = load_model(tiny_cfg.model)
    trainer = CompletionSFTTrainer(
        model=model,
        args=sft_config(tiny_cfg, tmp_path / "x", 4, progress=False),
        train_dataset=sft_dataset(rows(4), tiny_cfg.instruction),
        processing_class=tokenizer,
        peft_config=lora_config(tiny_cfg.training.lora, model),
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert (batch["labels"] != -100).sum() < 0.1 * batch["labels"].numel()  # the loss is on a few tokens
    with torch.no_grad():
        ours = trainer.compute_loss(trainer.model, dict(batch))
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        full = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=1e-5)
