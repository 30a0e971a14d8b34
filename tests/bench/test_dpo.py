"""bench dpo's training runs on the tiny model: the SFT run is SFT (a shadowed name once made every run DPO) and the DPO run
builds its pairs from the SFT adapter's own answers."""

from bench.dpo import _child, _split


def test_the_split_is_the_demo_task_balanced_as_configured(tiny_cfg):
    train, eval_rows = _split(tiny_cfg)
    assert len(train) == 3 * 8 and len(eval_rows) == 3 * 4
    assert not {r.text for r in train} & {r.text for r in eval_rows}


def test_the_sft_run_trains_sft_and_the_dpo_run_trains_on_pairs_from_it(tiny_cfg, tmp_path):
    tiny_cfg.training.max_steps = 1
    sft = _child("sft", tiny_cfg.model_dump_json(), None, str(tmp_path / "sft"))
    assert "pairs" not in sft and sft["steps"] == 1 and sft["peak_rss_mb"] > 0
    assert (tmp_path / "sft" / "adapter" / "adapter_model.safetensors").exists()
    tiny_cfg.dpo.max_pairs, tiny_cfg.dpo.min_pairs = 4, 1  # an untrained adapter is right on a few rows: few pairs
    dpo = _child("dpo", tiny_cfg.model_dump_json(), str(tmp_path / "sft" / "adapter"), str(tmp_path / "dpo"))
    assert dpo["pairs"] and dpo["steps"] >= 1
