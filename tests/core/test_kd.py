"""KD trainer: soft targets from teacher traces, the weighted loss, the top-k KL term, the tokenizer check."""

import math

import pytest
import torch
from datasets import Dataset

from core.calibrated import task_messages
from core.config import TaskConfig
from core.kd import KDCollator, KDTrainer, classification_kd_rows, shared_tokenizer, train_kd
from core.models import load_model, lora_config
from core.sft import CompletionSFTTrainer, sft_config


def test_soft_targets_become_weighted_rows_per_label():
    cfg = TaskConfig()
    traces = [{"id": "a", "prompt": "x", "output": "Good", "label_probs": {"Good": 0.7, "Standard": 0.29, "Bad": 0.01}}]
    rows = classification_kd_rows(traces, cfg)
    weights = {r["completion"][0]["content"]: r["kd_weight"] for r in rows}
    assert set(weights) == {"Good", "Standard"}  # Bad is under min_target_prob
    assert math.isclose(sum(weights.values()), 1.0) and math.isclose(weights["Good"], 0.7 / 0.99)
    cfg.kd.soft_targets = False
    assert [(r["completion"][0]["content"], r["kd_weight"]) for r in classification_kd_rows(traces, cfg)] == [("Good", 1.0)]


def test_kd_rows_balance_the_teachers_answers():
    """An unbalanced pool's teacher answers are repeated up to the commonest label, as the SFT split is."""
    from collections import Counter

    cfg = TaskConfig()
    cfg.kd.soft_targets = False
    traces = [{"id": f"g{i}", "prompt": f"g{i}", "output": "Good"} for i in range(3)] + [{"id": "b", "prompt": "b", "output": "Bad"}]
    rows = classification_kd_rows(traces, cfg)
    assert Counter(r["completion"][0]["content"] for r in rows) == {"Good": 3, "Bad": 3}
    assert {r["prompt"][-1]["content"] for r in rows} == {"g0", "g1", "g2", "b"}  # every answer used


def _trainer(cls, cfg, tmp_path, rows, **kw):
    model, tokenizer = load_model(cfg.model)
    return cls(
        model=model, args=sft_config(cfg, tmp_path / cls.__name__, progress=False), train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer, peft_config=lora_config(cfg.training.lora, model), **kw,
    ), tokenizer


def test_kd_loss_with_unit_weights_is_the_sft_loss(tiny_cfg, tmp_path):
    rows = [
        {"prompt": task_messages(tiny_cfg.instruction, f"Interest_Rate: {i}"), "completion": [{"role": "assistant", "content": lab}]}
        for i, lab in enumerate(["Good", "Standard", "Bad", "Good"])
    ]
    torch.manual_seed(0)
    sft, tok = _trainer(CompletionSFTTrainer, tiny_cfg, tmp_path, rows)
    torch.manual_seed(0)
    kd, _ = _trainer(KDTrainer, tiny_cfg, tmp_path, [r | {"kd_weight": 1.0} for r in rows], data_collator=KDCollator(tok.pad_token_id))
    batch = [sft.train_dataset[i] for i in range(4)]
    sft_inputs = sft.data_collator(batch)
    kd_inputs = kd.data_collator([dict(b, kd_weight=1.0) for b in batch])
    with torch.no_grad():
        sft_loss = sft.compute_loss(sft.model, sft_inputs)
        kd_loss = kd.compute_loss(kd.model, kd_inputs)
        # Down-weighting a row changes the loss: the weights reach it.
        kd_inputs = kd.data_collator([dict(b, kd_weight=w) for b, w in zip(batch, [1.0, 0.0, 0.0, 0.0])])
        weighted = kd.compute_loss(kd.model, kd_inputs)
    assert torch.allclose(sft_loss, kd_loss, atol=1e-5)
    assert not torch.allclose(weighted, kd_loss, atol=1e-4)


def test_topk_kl_is_zero_when_the_teacher_is_the_student(tiny_cfg, tmp_path):
    prompt = task_messages(tiny_cfg.instruction, "Interest_Rate: 5")
    row = {"prompt": prompt, "completion": [{"role": "assistant", "content": "Standard"}], "kd_weight": 1.0}
    trainer, tok = _trainer(KDTrainer, tiny_cfg, tmp_path, [row], data_collator=KDCollator(2), token_kl_weight=1.0)
    [example] = [trainer.train_dataset[0]]
    inputs = trainer.data_collator([example])
    targets = inputs["labels"][0, 1:]
    positions = (targets != -100).nonzero().squeeze(-1)
    with torch.no_grad():
        logits = trainer.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[0, positions]
    top = torch.log_softmax(logits.float(), -1).topk(5, dim=-1)
    own = dict(example, teacher_topk_ids=top.indices.tolist(), teacher_topk_logprobs=top.values.tolist())
    with torch.no_grad():
        same = trainer.compute_loss(trainer.model, trainer.data_collator([own]))
        flipped = dict(own, teacher_topk_logprobs=top.values.flip(-1).tolist())  # the teacher prefers the student's 5th choice
        other = trainer.compute_loss(trainer.model, trainer.data_collator([flipped]))
    assert same.item() == pytest.approx(0.0, abs=1e-5)
    assert other.item() > 1e-3  # the tiny random model is near uniform, so the gap is small but real


def test_shared_tokenizer_is_checked(tiny_cfg):
    _, tok = load_model(tiny_cfg.model)
    answer = "Standard"
    ids = tok(answer, add_special_tokens=False).input_ids
    tokens = tok.convert_ids_to_tokens(ids)
    assert shared_tokenizer([[[t, -0.1], ["Good", -3.0]] for t in tokens], answer, tok) is None
    assert "not in the student's vocabulary" in shared_tokenizer([[["\u2581Standard_of_another_vocab", -0.1]]], answer, tok)
    assert "splits the teacher's answer differently" in shared_tokenizer([[["Good", -0.1]]], answer, tok)


def test_train_kd_saves_an_adapter(tiny_cfg, tmp_path):
    tiny_cfg.training.max_steps = 2
    traces = [
        {"id": f"t{i}", "prompt": f"Interest_Rate: {i}", "output": "Bad", "label_probs": {"Good": 0.2, "Standard": 0.1, "Bad": 0.7}}
        for i in range(6)
    ]
    adapter, stats = train_kd(tiny_cfg, traces, tmp_path / "ck", tmp_path / "adapter", progress=False)
    assert (adapter / "adapter_config.json").exists() and stats.steps == 2


def test_extraction_kd_traces_carry_topk_and_train_with_the_token_kl(tiny_cfg, tmp_path):
    """idp: an `hf` teacher held to the schema writes traces with per-token top-k; KD uses them (same tokenizer)."""
    from core.data import Example
    from core.invoices import generate
    from core.teacher import make_teacher
    from core.traces import TraceStore, generate_traces
    from core.kd import generation_kd_rows
    from transformers import AutoTokenizer

    cfg = TaskConfig(type="idp", model=tiny_cfg.model, runs_dir=tiny_cfg.runs_dir, work_dir=tiny_cfg.work_dir, max_new_tokens=200)
    cfg.teacher.backend, cfg.teacher.model, cfg.teacher.top_logprobs = "hf", tiny_cfg.model.base_model, 3
    cfg.training.batch_size, cfg.training.max_steps, cfg.training.save_steps = 2, 2, 2
    rows = [Example(r["id"], r["document"]) for r in generate(4, seed=9)]
    store = TraceStore(tmp_path / "traces.jsonl")
    summary = generate_traces(rows, store, lambda: make_teacher(cfg), progress=False)
    assert summary["usable"] == 4 and summary["failed"] == 0  # constrained: every answer validates
    traces = store.usable()
    assert all(len(t["top_logprobs"]) == t["completion_tokens"] and len(t["top_logprobs"][0]) <= 3 for t in traces)
    kd_rows, counts = generation_kd_rows(traces, cfg, AutoTokenizer.from_pretrained(tiny_cfg.model.base_model))
    assert counts["with_token_kl"] + counts["sequence_only"] == 4
    # A random model's constrained tokens are rarely the canonical split of its text: caught, never assumed.
    tokenizer = AutoTokenizer.from_pretrained(tiny_cfg.model.base_model)
    canonical = tokenizer.convert_ids_to_tokens(tokenizer(traces[0]["output"], add_special_tokens=False).input_ids)
    agreed = [dict(traces[0], top_logprobs=[[[tok, -0.1], ["{", -2.5]] for tok in canonical])]
    foreign = [dict(traces[0], top_logprobs=[[["<not-a-token>", -0.1]]])]
    [row], counts = generation_kd_rows(agreed, cfg, tokenizer)
    assert counts["with_token_kl"] == 1 and len(row["teacher_topk_ids"]) == len(canonical)
    assert generation_kd_rows(foreign, cfg, tokenizer)[1]["sequence_only"] == 1
    adapter, stats = train_kd(cfg, traces, tmp_path / "ckpt", tmp_path / "adapter", progress=False)
    assert stats.steps == 2 and (adapter / "adapter_model.safetensors").exists()
