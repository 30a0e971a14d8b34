"""DPO: pairs from users and built on-policy, bad pairs refused with file and line, SFT -> DPO training."""

import json

import pytest
import torch

from core.common.config import TaskConfig
from core.common.rows import Example, Pair
from core.errors import DataError
from core.kinds import for_config
from core.model.decoders import classification_decoder
from core.model.loading import load_model
from core.settings import ModelSettings
from core.training.dpo_trainer import check_pairs, load_pairs, train_dpo
from tests.conftest import make_adapter


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_user_pairs_are_checked_with_file_and_line(tmp_path):
    good = {"prompt": "Interest_Rate: 3", "chosen": "Good", "rejected": "Bad"}
    assert [p.chosen for p in load_pairs(write(tmp_path / "ok.jsonl", [good]), ["Good", "Standard", "Bad"])] == ["Good"]
    with pytest.raises(DataError, match=r"empty.jsonl:2: field 'rejected': missing or empty"):
        load_pairs(write(tmp_path / "empty.jsonl", [good, good | {"rejected": " "}]))
    with pytest.raises(DataError, match=r"same.jsonl:1: field 'rejected': identical to chosen"):
        load_pairs(write(tmp_path / "same.jsonl", [good | {"rejected": "Good"}]))
    with pytest.raises(DataError, match=r"label.jsonl:1: field 'chosen': 'Gold' is not one of the labels"):
        load_pairs(write(tmp_path / "label.jsonl", [good | {"chosen": "Gold"}]), ["Good", "Standard", "Bad"])


def test_too_few_or_too_long_pairs_stop_the_run(tiny_cfg):
    _, tokenizer = load_model(tiny_cfg.model, ModelSettings())
    pairs = [Pair("Interest_Rate: 3", "Good", "Bad", "user", line=n) for n in range(1, 4)]
    with pytest.raises(DataError, match="3 usable preference pairs, fewer than dpo.min_pairs=8"):
        check_pairs(pairs, tiny_cfg, tokenizer, "pairs.jsonl")
    tiny_cfg.dpo.min_pairs = 1
    pairs.append(Pair("word " * 400, "Good", "Bad", "user", line=4))
    with pytest.raises(DataError, match=r"pairs.jsonl:4: field 'prompt': \d+ tokens, over training.max_length=256"):
        check_pairs(pairs, tiny_cfg, tokenizer, "pairs.jsonl")


def test_on_policy_pairs_reject_the_students_likeliest_wrong_label(tiny_cfg):
    model, tokenizer = load_model(tiny_cfg.model, ModelSettings())
    decoder = classification_decoder(tiny_cfg, model, tokenizer, adapter=None)
    rows = [Example(f"r{i}", f"Interest_Rate: {i}", label) for i, label in enumerate(["Good", "Standard", "Bad"] * 2)]
    traces = [{"prompt": "Interest_Rate: 40", "output": "Bad"}]
    pairs, counts = for_config(tiny_cfg, ModelSettings()).preference_pairs(rows, decoder, traces)
    assert counts["gold"] + counts["teacher"] == len(pairs) == 7 - counts["dropped_to_balance"]
    for pair, pred in zip(pairs, decoder.predict([p.prompt for p in pairs])):
        assert pair.rejected != pair.chosen
        assert pair.rejected == max((p, label) for label, p in pred.probs.items() if label != pair.chosen)[1]


def test_sft_to_dpo_trains_from_the_adapter_against_a_frozen_copy(tiny_cfg, tmp_path):
    start = make_adapter(tiny_cfg, tmp_path / "sft", seed=5)
    tiny_cfg.training.max_steps, tiny_cfg.dpo.min_pairs = 2, 1
    tiny_cfg.dpo.learning_rate = 1e-2
    pairs = [Pair(f"Interest_Rate: {i}", "Good", "Bad", "gold") for i in range(8)]
    adapter, stats = train_dpo(tiny_cfg, ModelSettings(), pairs, tmp_path / "ck", tmp_path / "dpo", start_adapter=start, progress=False)
    assert stats.steps == 2
    from safetensors.torch import load_file

    before, after = load_file(start / "adapter_model.safetensors"), load_file(adapter / "adapter_model.safetensors")
    assert before.keys() == after.keys()  # the trained adapter only; the frozen "ref" copy is not saved
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_extraction_pairs_reject_valid_but_wrong_json_and_train(tiny_cfg, tmp_path):
    """idp: chosen = gold JSON; rejected = the student's wrong output, or the gold with one field changed; both validate."""
    import json

    from core.common.rows import Example
    from core.evaluation.metrics import field_diff
    from core.kinds.extraction import perturbed, task_schema
    from core.model.loading import load_model
    from core.training.dpo_trainer import train_dpo
    from demos.invoices import generate

    cfg = TaskConfig(type="idp", model=tiny_cfg.model, max_new_tokens=200)
    cfg.dpo.min_pairs, cfg.training.batch_size, cfg.training.max_steps, cfg.training.save_steps = 2, 2, 2, 2
    schema = task_schema(cfg, ModelSettings())
    rows = [Example(r["id"], r["document"], schema.dumps(r["target"])) for r in generate(3, seed=4)]
    model, tokenizer = load_model(cfg.model, ModelSettings())
    kind = for_config(cfg, ModelSettings())
    pairs, counts = kind.preference_pairs(rows, kind.decoder(model, tokenizer), None)
    assert len(pairs) == 3 and counts["student_wrong"] + counts["perturbed_gold"] == 3
    for pair in pairs:
        chosen, rejected = json.loads(pair.chosen), json.loads(pair.rejected)
        assert not schema.errors(rejected) and pair.chosen != pair.rejected
        assert field_diff(chosen, rejected)["correct"] < field_diff(chosen, chosen)["correct"]
    import random

    gold = json.loads(rows[0].label)
    wrong = perturbed(gold, schema, random.Random(1))
    assert wrong != gold and not schema.errors(wrong) and sum(field_diff(gold, wrong)[k] for k in ("wrong", "missing", "extra")) == 1
    adapter, stats = train_dpo(cfg, ModelSettings(), pairs, tmp_path / "ckpt", tmp_path / "dpo", progress=False)
    assert stats.steps == 2 and (adapter / "adapter_model.safetensors").exists()


def test_scoring_only_completion_positions_keeps_trls_fused_head_contract(tiny_cfg, tmp_path):
    """CompletionDPOTrainer's LM head skips prompts; every field TRL's trainer reads, and the loss, must be TRL's own.

    Fails loudly if a TRL upgrade stops calling the model with `fused_lm_head=True` (the head would be dead code)
    or changes what a `FusedCausalLMOutput` field means.
    """
    from core.model.loading import lora_config
    from core.training.dpo_trainer import CompletionDPOTrainer, dpo_config, dpo_dataset

    pairs = [Pair(f"Interest_Rate: {i}", "Good", "Standard", "gold") for i in range(4)]
    model, tokenizer = load_model(tiny_cfg.model, ModelSettings())
    trainer = CompletionDPOTrainer(
        model=model,
        args=dpo_config(tiny_cfg, tmp_path, len(pairs)),
        train_dataset=dpo_dataset(pairs, tiny_cfg.instruction),
        processing_class=tokenizer,
        peft_config=lora_config(tiny_cfg.training.lora, model),
    )
    base = trainer.model.get_base_model()
    ours, trls = base.forward, base.forward.__wrapped__
    calls = []
    base.forward = lambda *a, **kw: calls.append(kw.get("fused_lm_head")) or ours(*a, **kw)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        compact = trainer.compute_loss(trainer.model, batch)
        assert True in calls, "TRL no longer calls the model with fused_lm_head=True: CompletionDPOTrainer's head is unused"
        base.forward = trls
        stock = trainer.compute_loss(trainer.model, batch)
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels, "fused_lm_head": True}
        theirs, mine = trls(**inputs), ours(**inputs)
    assert torch.allclose(compact, stock, atol=1e-5)
    grads = []
    for forward in (ours, trls):  # and the gradient the LoRA weights get
        base.forward = forward
        trainer.model.zero_grad()
        trainer.compute_loss(trainer.model, batch).backward()
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.requires_grad]))
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-3)
    for field in ("loss", "log_probs", "entropy", "mean_logits", "is_top1", "label_mask"):
        expected, got = getattr(theirs, field), getattr(mine, field)
        assert expected is not None and got.shape == expected.shape, field
        assert torch.allclose(got.float(), expected.float(), atol=1e-4), field
    # A forward holds batch_size sequences (chosen + rejected) as an SFT forward does; a step still sees batch_size pairs.
    assert batch["input_ids"].shape[0] == tiny_cfg.training.batch_size
    assert trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps == tiny_cfg.training.batch_size


def test_label_balanced_pairs_choose_each_label_as_often_as_they_reject_it():
    from collections import Counter

    from core.kinds.classification import label_balanced

    edges = [("Good", "Standard")] * 5 + [("Standard", "Good")] * 2 + [("Bad", "Standard")] * 4 + [("Standard", "Bad")] * 1
    edges += [("Good", "Bad")] * 3 + [("Bad", "Good")] * 0
    pairs = [Pair(f"x{i}", c, r, "gold") for i, (c, r) in enumerate(edges)]
    kept = label_balanced(pairs)
    assert Counter(p.chosen for p in kept) == Counter(p.rejected for p in kept)
    # Good>Bad>Standard>Good twice (Standard>Good runs out), then Bad<->Standard once; Good>Standard x3 unmatched.
    assert len(kept) == 3 * 2 + 2 * 1
    assert kept == sorted(kept, key=pairs.index)  # earlier pairs first, order kept
