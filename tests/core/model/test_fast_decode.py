"""The shared greedy loop: the same answers as transformers' generate; its fp16 fast path on the embedded model."""

import copy

import pytest
import torch

from core.common.config import ModelConfig
from core.evaluation.metrics import field_diff
from core.model.fast_decode import DecodeLinear, enable_fast_decode, greedy_decode
from core.model.loading import load_model
from core.model.schema import GrammarMask, SchemaDecoder, TaskSchema
from core.settings import ModelSettings
from demos import invoices


def _encode(tokenizer, prompts):
    return tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)


@pytest.mark.parametrize("constrained", [False, True])
def test_the_loop_answers_as_generate_does_on_a_padded_batch(tiny_model_dir, constrained):
    model, tokenizer = load_model(ModelConfig(base_model=str(tiny_model_dir)), ModelSettings())
    schema = TaskSchema.from_dict(invoices.SCHEMA)
    decoder = SchemaDecoder(model, tokenizer, schema, "Extract.")
    enc = _encode(tokenizer, [decoder.prompt(d["document"]) for d in invoices.generate(3, seed=1)] + [decoder.prompt("x")])

    def processors():
        return [GrammarMask(decoder.grammar, 4)] if constrained else []

    expected = model.generate(
        **enc,
        max_new_tokens=24,
        do_sample=False,
        logits_processor=processors(),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )[:, enc["input_ids"].shape[1] :]
    got, _ = greedy_decode(model, enc, 24, tokenizer.eos_token_id, tokenizer.pad_token_id, processors())
    assert got.shape[1] <= 24 and torch.equal(got, expected[:, : got.shape[1]])
    assert (expected[:, got.shape[1] :] == tokenizer.pad_token_id).all()  # generate only padded where the loop stopped


def test_fast_decode_keeps_answers_valid_and_leaves_training_weights_alone(embedded_dir):
    model, tokenizer = load_model(ModelConfig(), ModelSettings())
    fast = copy.deepcopy(model)
    assert enable_fast_decode(fast, "fp16+bf16")  # pinned: the same path on every CPU
    linear = fast.model.layers[0].mlp.up_proj
    assert (
        isinstance(linear, DecodeLinear)
        and linear.weight.dtype == torch.float32
        and linear.copies[(None, torch.float16)].dtype == torch.float16
    )
    schema = TaskSchema.from_dict(invoices.SCHEMA)
    docs = [d["document"] for d in invoices.generate(2, seed=3)]
    slow = SchemaDecoder(model, tokenizer, schema, "Extract the invoice as JSON.", max_new_tokens=200, batch_size=1).extract(docs)
    quick = SchemaDecoder(fast, tokenizer, schema, "Extract the invoice as JSON.", max_new_tokens=200, batch_size=1).extract(docs)
    # fp16 weights could change a close call between two tokens (bench generate reports field F1 on 30 documents);
    # on these two documents not one token changes.
    assert [r.text for r in quick] == [r.text for r in slow] and quick[0].valid
    # Prefill stays on the fp32 weights; batched decode steps run on the bf16 copies (where this CPU multiplies bf16
    # faster): a few close calls may change, the answers stay valid and agree with fp32 on most fields.
    batched = SchemaDecoder(fast, tokenizer, schema, "Extract the invoice as JSON.", batch_size=2).extract(docs, max_new_tokens=80)
    reference = SchemaDecoder(model, tokenizer, schema, "Extract the invoice as JSON.", batch_size=2).extract(docs, max_new_tokens=80)
    agreement = [field_diff(r.output, b.output) for r, b in zip(reference, batched)]
    assert all(b.valid for b in batched) and sum(a["correct"] for a in agreement) >= 0.7 * sum(a["gold"] for a in agreement), agreement


def test_adapters_attach_over_the_decode_copies_and_act_on_the_fast_path(tiny_model_dir, tmp_path):
    from core.common.config import TaskConfig
    from core.model.fast_decode import fast_steps, merge_for_decode, merged_adapter
    from core.model.loading import load_adapter
    from tests.conftest import make_adapter

    cfg = TaskConfig()
    cfg.model.base_model = str(tiny_model_dir)
    adapter = make_adapter(cfg, tmp_path / "adapter", seed=1)
    model, _ = load_model(cfg.model, ModelSettings())
    assert enable_fast_decode(model, "fp16+bf16")
    peft_model = load_adapter(model, adapter)
    lora = next(m for m in peft_model.modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A"))
    assert isinstance(lora.base_layer, DecodeLinear)
    x = torch.randn(1, 1, lora.base_layer.in_features)
    with torch.no_grad():
        slow = lora(x)
        with fast_steps(peft_model):
            fast = lora(x)
            with peft_model.disable_adapter():
                fast_base = lora(x)
        assert merge_for_decode(peft_model, "default")  # the production variant's copy: weight + LoRA delta in fp16
        # a layer the adapter does not touch keeps running on its base fp16 copy while the merged adapter is active
        wrapped = {id(m.base_layer) for m in peft_model.modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")}
        plain = next(m for m in peft_model.modules() if isinstance(m, DecodeLinear) and id(m) not in wrapped)
        y = torch.randn(1, 1, plain.in_features)
        with merged_adapter(peft_model, "default"), fast_steps(peft_model):
            merged = lora(x)
            untouched = plain(y)
        after = lora(x)  # the merged layers' LoRA branches are switched back on after the steps
    expected = torch.nn.functional.linear(y.half(), plain.copies[(None, torch.float16)]).float()
    assert torch.equal(untouched, expected)  # not the fp32 weight: that would be the slow path
    assert not torch.equal(fast, slow) and torch.allclose(fast, slow, atol=5e-2)  # fp16 weights, the same layer
    assert not torch.allclose(fast, fast_base, atol=5e-2)  # the adapter acts on the fast path
    assert torch.allclose(merged, slow, atol=5e-2) and not torch.equal(merged, fast)  # merged in, not added twice
    assert torch.equal(after, slow) and not lora.disable_adapters


def test_fast_decode_set_up_after_adapters_leaves_their_lora_weights_alone(tiny_model_dir, tmp_path):
    """The service turns the fast path on when a generating task appears, adapters may already be attached."""
    from core.common.config import TaskConfig
    from core.model.loading import load_adapter
    from tests.conftest import make_adapter

    cfg = TaskConfig()
    cfg.model.base_model = str(tiny_model_dir)
    model, _ = load_model(cfg.model, ModelSettings())
    peft_model = load_adapter(model, make_adapter(cfg, tmp_path / "adapter", seed=2))
    assert enable_fast_decode(peft_model, "fp16+bf16")
    lora = next(m for m in peft_model.modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A"))
    assert isinstance(lora.base_layer, DecodeLinear) and type(lora.lora_A["default"]) is torch.nn.Linear
