import shutil

import pytest
import torch

from core.common.config import LoraSettings, ModelConfig
from core.errors import ModelNotAvailable
from core.model.loading import EMBEDDED_NAME, attach_lora, fetch_embedded_model, load_model, verify_model_dir


def test_embedded_model_is_converted_and_verified(embedded_dir):
    assert embedded_dir.name == EMBEDDED_NAME
    verify_model_dir(embedded_dir)  # every file matches the sha256 recorded at conversion
    assert "quantization_config" not in (embedded_dir / "config.json").read_text()


def test_tampered_model_folder_is_refused(embedded_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(embedded_dir, copy, ignore=shutil.ignore_patterns("model.safetensors"))
    (copy / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(ModelNotAvailable, match="sha256"):
        verify_model_dir(copy)


def test_wrong_gguf_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_SLM_MODELS_DIR", str(tmp_path / "models"))
    fake = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake.write_bytes(b"GGUF but not the pinned one")
    with pytest.raises(ModelNotAvailable, match="not the pinned"):
        fetch_embedded_model(fake)


def test_missing_local_model_names_the_path(tmp_path):
    with pytest.raises(ModelNotAvailable, match="no-such-folder"):
        load_model(ModelConfig(base_model=str(tmp_path / "no-such-folder")))


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precisions(tiny_model_dir, precision, dtype):
    model, tokenizer = load_model(ModelConfig(base_model=str(tiny_model_dir), precision=precision))
    assert next(model.parameters()).dtype == dtype
    assert tokenizer.pad_token is not None


def test_nf4_loads_on_cpu_and_trains_a_qlora_step(tiny_model_dir):
    model, tokenizer = load_model(ModelConfig(base_model=str(tiny_model_dir), quantization="nf4"))
    assert getattr(model, "is_loaded_in_4bit", False)
    peft_model = attach_lora(model, LoraSettings(r=4))
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    batch = tokenizer(["hello world"], return_tensors="pt")
    loss = peft_model(**batch, labels=batch.input_ids).loss
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


def test_lora_attach_and_disable_restore_base_outputs(tiny_model_dir):
    model, tokenizer = load_model(ModelConfig(base_model=str(tiny_model_dir)))
    batch = tokenizer(["the same input"], return_tensors="pt")
    with torch.no_grad():
        base = model(**batch).logits.clone()
    peft_model = attach_lora(model, LoraSettings(r=4))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)  # a trained-looking adapter
    with torch.no_grad():
        adapted = peft_model(**batch).logits
        with peft_model.disable_adapter():
            detached = peft_model(**batch).logits
    assert not torch.allclose(adapted, base, atol=1e-3)
    torch.testing.assert_close(detached, base)
