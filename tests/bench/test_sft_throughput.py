"""bench sft-throughput's other side: a bare TRL SFTTrainer with the same LoRA and rows, on the tiny model."""

from bench.calibrated import eval_rows
from bench.sft_throughput import bare_trl


def test_the_bare_trl_side_trains_the_same_rows_for_the_planned_steps(tiny_cfg, tmp_path):
    tiny_cfg.training.max_steps = 2
    seconds = bare_trl(tiny_cfg, eval_rows(2), tmp_path / "trl")
    assert seconds > 0
    assert (tmp_path / "trl" / "checkpoint-2" / "adapter_model.safetensors").exists()  # LoRA, 2 steps, as configured
