import json

import pytest

from core.common.rows import Example
from core.errors import DataError
from core.settings import ModelSettings
from core.training.sft_trainer import CompletionSFTTrainer, train_sft
from demos import creditmix


def rows(n):
    return [Example(**r) for r in creditmix.generate(n, seed=5)]


TRAIN = """
import sys
from core.common.config import TaskConfig
from core.common.rows import Example
from core.evaluation.evaluate import validation_score
from core.kinds import for_config
from core.model.loading import load_tokenizer
from core.settings import ModelSettings
from core.training.sft_trainer import train_sft
from demos import creditmix

model_dir, ckpt, out = sys.argv[1:4]
cfg = TaskConfig()
cfg.model.base_model = model_dir
cfg.training.max_steps, cfg.training.save_steps, cfg.training.eval_steps, cfg.training.batch_size = 120, 3, 4, 4
settings = ModelSettings()
kind, tokenizer = for_config(cfg, settings), load_tokenizer(cfg.model, settings)
rows = [Example(**r) for r in creditmix.generate(48, seed=5)]
validation = rows[:6]

def validate(model):  # the first validation of a run comes after a checkpoint: the kills land in real work
    print("ready", flush=True)
    return validation_score(kind, model, tokenizer, validation)

adapter, stats = train_sft(cfg, settings, rows[6:], ckpt, out, progress=False, validate=validate)
print("resumed_from", stats.resumed_from, "steps", stats.steps, flush=True)
print("ready", flush=True)  # nothing was left to validate: the kill lands after the end
"""


def test_training_killed_at_random_moments_resumes_from_its_last_complete_checkpoint(tiny_model_dir, tmp_path):
    """8 SIGKILLs of a real training process at seeded random moments (mid-step, mid-checkpoint, mid-validation): after
    each, the newest complete checkpoint, the validation curve and the best adapter read back whole, and progress never
    goes backwards; the final run resumes from the last checkpoint and finishes the plan."""
    import os
    import random
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from core.training.sft_trainer import last_complete_checkpoint
    from tests.conftest import kill_at_random_moment

    rng = random.Random(7)
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    ckpt, out = tmp_path / "ckpt", tmp_path / "adapter"
    args = [str(script), str(tiny_model_dir), str(ckpt), str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    progress = 0
    for _ in range(5):  # five kills (CI's 15 minutes): each still lands mid-training and is checked
        kill_at_random_moment(args, "ready", rng, 2.0, "training", env)
        last = last_complete_checkpoint(ckpt)
        if last is None:
            continue
        step = json.loads((Path(last) / "trainer_state.json").read_text())["global_step"]
        assert step >= progress
        progress = step
        if (ckpt / "validation.json").exists():
            json.loads((ckpt / "validation.json").read_text())
        if (ckpt / "best").exists():
            assert load_file(ckpt / "best" / "adapter_model.safetensors")
            json.loads((ckpt / "best" / "adapter_config.json").read_text())
    assert progress > 0, "no kill landed after the first checkpoint"
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed_from " + str(ckpt / f"checkpoint-{progress}") in done.stdout
    assert (out / "adapter_model.safetensors").stat().st_size > 0


def test_rows_over_max_length_are_refused_not_truncated(tiny_cfg, tmp_path):
    tiny_cfg.training.max_length = 40
    with pytest.raises(DataError) as err:
        train_sft(tiny_cfg, ModelSettings(), rows(4), tmp_path / "ckpt", tmp_path / "adapter", source="train.jsonl")
    assert err.value.line == 1 and err.value.field == "text" and "max_length=40" in str(err.value)


def test_qlora_trains_on_a_4bit_base(tiny_cfg, tmp_path):
    tiny_cfg.model.quantization = "nf4"
    tiny_cfg.training.max_steps = 1
    adapter, stats = train_sft(tiny_cfg, ModelSettings(), rows(4), tmp_path / "ckpt", tmp_path / "adapter", progress=False)
    assert stats.steps == 1
    assert (adapter / "adapter_model.safetensors").exists()


def test_completion_only_projection_gives_the_full_logits_loss(tiny_cfg, tmp_path):
    import torch
    import torch.nn.functional as F

    from core.model.loading import load_model, lora_config
    from core.training.sft_trainer import sft_config, sft_dataset

    model, tokenizer = load_model(tiny_cfg.model, ModelSettings())
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
