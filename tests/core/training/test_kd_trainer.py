"""KD trainer: rows from teacher traces, the label-distribution term, the top-k KL term, the tokenizer check."""

import pytest
import torch
from datasets import Dataset

from core.common.config import TaskConfig
from core.common.prompts import task_messages
from core.kinds import for_config
from core.model.loading import load_model, lora_config
from core.settings import ModelSettings
from core.training.kd_trainer import KDCollator, KDTrainer
from core.training.sft_trainer import CompletionSFTTrainer, sft_config


def test_rows_carry_the_teachers_answer_and_label_distribution():
    cfg = TaskConfig()
    traces = [{"id": "a", "prompt": "x", "output": "Good", "label_probs": {"Good": 0.7, "Bad": 0.1, "Standard": 0.2}}]
    [row] = for_config(cfg, ModelSettings()).kd_rows(traces)[0]
    assert row["completion"] == [{"role": "assistant", "content": "Good"}]
    assert row["label_targets"] == pytest.approx([0.7, 0.2, 0.1])  # in cfg.labels order: Good, Standard, Bad
    [row] = for_config(cfg, ModelSettings()).kd_rows([{"id": "b", "prompt": "y", "output": "Bad"}])[0]  # a teacher without probabilities
    assert row["label_targets"] == [0.0, 0.0, 1.0]


def test_kd_rows_balance_the_teachers_answers():
    """An unbalanced pool's teacher answers are repeated up to the commonest label, as the SFT split is."""
    from collections import Counter

    cfg = TaskConfig()
    traces = [{"id": f"g{i}", "prompt": f"g{i}", "output": "Good"} for i in range(3)] + [{"id": "b", "prompt": "b", "output": "Bad"}]
    rows = for_config(cfg, ModelSettings()).kd_rows(traces)[0]
    assert Counter(r["completion"][0]["content"] for r in rows) == {"Good": 3, "Bad": 3}
    assert {r["prompt"][-1]["content"] for r in rows} == {"g0", "g1", "g2", "b"}  # every answer used


def _trainer(cls, cfg, tmp_path, rows, **kw):
    model, tokenizer = load_model(cfg.model, ModelSettings())
    return cls(
        model=model,
        args=sft_config(cfg, tmp_path / cls.__name__, len(rows), progress=False),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.training.lora, model),
        **kw,
    ), tokenizer


def test_kd_loss_is_the_sft_loss_mixed_with_the_decoders_label_distribution(tiny_cfg, tmp_path):
    """kl_weight 0: exactly SFT on the teacher's answers. kl_weight 1: the cross-entropy against the teacher's
    label probabilities of the very distribution the calibrated decoder ranks (uncalibrated, over the labels)."""
    from core.model.calibrated import CalibratedDecoder

    texts, answers = [f"Interest_Rate: {i}" for i in range(4)], ["Good", "Standard", "Bad", "Good"]
    targets = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.4, 0.4, 0.2]])
    rows = [
        {"prompt": task_messages(tiny_cfg.instruction, text), "completion": [{"role": "assistant", "content": answer}]}
        for text, answer in zip(texts, answers)
    ]
    torch.manual_seed(0)
    sft, tok = _trainer(CompletionSFTTrainer, tiny_cfg, tmp_path, rows)
    torch.manual_seed(0)
    kd_rows = [r | {"label_targets": t.tolist()} for r, t in zip(rows, targets)]
    kd, _ = _trainer(KDTrainer, tiny_cfg, tmp_path, kd_rows, data_collator=KDCollator(tok.pad_token_id), labels=tiny_cfg.labels)
    batch = [kd.train_dataset[i] for i in range(4)]
    decoder = CalibratedDecoder(kd.model, tok, tiny_cfg.labels, tiny_cfg.instruction, calibrate=False)
    with torch.no_grad():
        sft_loss = sft.compute_loss(sft.model, sft.data_collator([sft.train_dataset[i] for i in range(4)]))
        kd.kl_weight = 0.0
        hard = kd.compute_loss(kd.model, kd.data_collator(batch))
        kd.kl_weight = 1.0
        soft = kd.compute_loss(kd.model, kd.data_collator(batch))
        kd.kl_weight = 0.5
        mixed = kd.compute_loss(kd.model, kd.data_collator(batch))
    expected = -(targets * torch.log(torch.tensor(decoder.label_distribution(texts), dtype=torch.float))).sum(-1).mean()
    assert torch.allclose(sft_loss, hard, atol=1e-5)
    assert soft.item() == pytest.approx(expected.item(), rel=1e-4)
    assert mixed.item() == pytest.approx(0.5 * hard.item() + 0.5 * soft.item(), rel=1e-5)


def test_any_label_set_is_scored_by_whole_label_sequences(tiny_cfg, tmp_path):
    """Labels that share first tokens (review-manual / review-legal), part at different positions, and one that begins
    another (pay / pay-partial): the soft term is the cross-entropy against the very distribution the calibrated decoder
    ranks (whole label sequences, the answer's end token after each), computed in the answer's own forward."""
    from core.model.calibrated import CalibratedDecoder, label_sequences

    labels = ["approve", "review-manual", "review-legal", "pay", "pay-partial"]
    _, tok = load_model(tiny_cfg.model, ModelSettings())
    ids = label_sequences(tok, labels)
    assert ids[1][0] == ids[2][0] and ids[3] != ids[4][: len(ids[3])]  # shared first token; the prefix is ended
    texts = [f"claim {i}: the loss is {i * 700} dollars" for i in range(5)]
    rows = [
        {"prompt": task_messages(tiny_cfg.instruction, text), "completion": [{"role": "assistant", "content": label}]}
        for text, label in zip(texts, labels)
    ]
    targets = torch.softmax(torch.randn(5, 5, generator=torch.Generator().manual_seed(1)), dim=-1)
    kd_rows = [r | {"label_targets": t.tolist()} for r, t in zip(rows, targets)]
    kd, _ = _trainer(KDTrainer, tiny_cfg, tmp_path, kd_rows, data_collator=KDCollator(tok.pad_token_id), labels=labels, kl_weight=1.0)
    batch = kd.data_collator([kd.train_dataset[i] for i in range(5)])
    decoder = CalibratedDecoder(kd.model, tok, labels, tiny_cfg.instruction, calibrate=False)
    with torch.no_grad():
        soft = kd.compute_loss(kd.model, dict(batch))
        kd.kl_weight = 0.0
        hard = kd.compute_loss(kd.model, dict(batch))
        plain = CompletionSFTTrainer.compute_loss(kd, kd.model, kd.data_collator.base([kd.train_dataset[i] for i in range(5)]))
    expected = -(targets * torch.log(torch.tensor(decoder.label_distribution(texts), dtype=torch.float))).sum(-1).mean()
    assert soft.item() == pytest.approx(expected.item(), rel=1e-4)
    assert hard.item() == pytest.approx(plain.item(), rel=1e-4)  # the label blocks leave the answer's own loss as it was


def test_labels_the_tokenizer_cannot_tell_apart_are_refused_by_name():
    from core.errors import ConfigError
    from core.model.calibrated import label_sequences

    class Lowercasing:  # a tokenizer that normalises case, as some do
        def __call__(self, text, add_special_tokens=False):
            return type("Encoding", (), {"input_ids": [ord(c) for c in text.lower()]})()

    with pytest.raises(ConfigError, match="'Approve' and 'approve' are the same tokens"):
        label_sequences(Lowercasing(), ["Approve", "deny", "approve"])


def test_topk_kl_is_zero_when_the_teacher_is_the_student(tiny_cfg, tmp_path):
    prompt = task_messages(tiny_cfg.instruction, "Interest_Rate: 5")
    row = {"prompt": prompt, "completion": [{"role": "assistant", "content": "Standard"}]}
    trainer, tok = _trainer(KDTrainer, tiny_cfg, tmp_path, [row], data_collator=KDCollator(2), kl_weight=1.0)
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


def test_kd_plans_more_steps_than_sft_on_the_same_rows():
    """KD's size rule runs to kd.min_steps (a 1,992-row pool: 5 passes, 1,250 steps), SFT's to training.min_steps; an
    explicit kd.epochs or training.epochs still wins."""
    from core.training.kd_trainer import kd_epochs
    from core.training.recipe import plan_steps

    cfg = TaskConfig()
    assert plan_steps(cfg.training, 1992, kd_epochs(cfg, 1992)).steps == 1250
    assert plan_steps(cfg.training, 1992).steps == 500
    assert kd_epochs(cfg, 100) == cfg.training.max_epochs  # a small pool: capped passes, as SFT's
    cfg.kd.epochs = 2.0
    assert kd_epochs(cfg, 1992) == 2.0
    cfg.kd.epochs, cfg.training.epochs = None, 1.0
    assert kd_epochs(cfg, 1992) == 1.0


def test_kd_with_label_blocks_trains_the_same_adapter_from_the_frozen_layers_cache(tiny_cfg, tmp_path, monkeypatch, caplog):
    """KD's forward (each row with its label blocks, a 4D mask, positions continuing the prompt's) runs from the frozen
    layers' cached output as SFT's does: six steps over repeated rows with labels that share a first token, once with
    the cache and once with it off; the saved adapters are equal and the cache held one entry per distinct row."""
    from safetensors.torch import load_file

    from core.training import sft_trainer
    from core.training.kd_trainer import train_kd

    labels = ["approve", "review-manual", "review-legal"]
    tiny_cfg.labels = labels
    tiny_cfg.training.lora.top_layers = 1
    tiny_cfg.training.max_steps = 6
    texts = [f"claim {i}: the loss is {i * 700} dollars" + " and more" * (i % 3) for i in range(6)]
    targets = torch.softmax(torch.randn(6, 3, generator=torch.Generator().manual_seed(2)), dim=-1).tolist()
    rows = [
        {
            "prompt": task_messages(tiny_cfg.instruction, text),
            "completion": [{"role": "assistant", "content": labels[i % 3]}],
            "label_targets": targets[i],
        }
        for i, text in enumerate(texts)
    ]
    held = {}
    real_forward = KDTrainer._forward_with_blocks

    def spy(self, *args, **kwargs):
        held["cache"] = self._frozen
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(KDTrainer, "_forward_with_blocks", spy)
    caplog.set_level("INFO", logger=sft_trainer.__name__)
    cached_dir, stats = train_kd(
        tiny_cfg, ModelSettings(), rows * 2, [], tmp_path / "ck1", tmp_path / "cached", labels=labels, progress=False
    )
    cache = held["cache"]
    monkeypatch.setattr(sft_trainer, "FROZEN_CACHE_BYTES", 0)
    plain_dir, _ = train_kd(tiny_cfg, ModelSettings(), rows * 2, [], tmp_path / "ck2", tmp_path / "plain", labels=labels, progress=False)
    said = [r.getMessage() for r in caplog.records if "frozen-layer cache" in r.getMessage()]
    assert said == ["training: frozen-layer cache on", "training: frozen-layer cache off"]
    assert stats.steps == 6 and len(cache.states) == 6  # one entry per distinct row, its label blocks included
    cached, plain = load_file(cached_dir / "adapter_model.safetensors"), load_file(plain_dir / "adapter_model.safetensors")
    assert cached.keys() == plain.keys() and any(plain[k].abs().sum() > 0 for k in plain if "lora_B" in k)  # it trained
    assert all(torch.allclose(cached[k], plain[k], atol=1e-5) for k in cached)
