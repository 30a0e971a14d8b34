"""bench base-models: what one side measures, on a real (tiny) model in this process (`run` puts two sides, each in
its own process, beside each other: `distill-slm bench base-models`, recorded in docs/results/base-models.json)."""

from bench import base_models


def test_one_base_is_loaded_scored_decoded_and_trained_and_each_figure_is_measured(tiny_model_dir):
    figures = base_models.measure(str(tiny_model_dir), quick=True)
    assert figures["sft_steps"] == 2 and figures["sft_s_per_step"] > 0
    assert figures["decode_tokens_per_s"] > 0 and figures["classify_one_p50_ms"] > 0 and figures["classify_batch_rows_per_s"] > 0
    assert figures["load_s"] > 0 and "weights_rss_mb" in figures  # a 2-layer model can add less than a megabyte
