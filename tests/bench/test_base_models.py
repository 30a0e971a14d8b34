"""bench base-models: both sides measured the same way, in their own processes, and their ratios."""

from bench import base_models


def test_two_bases_are_measured_side_by_side_with_their_ratios(tiny_model_dir):
    figures = base_models.run(quick=True, base=str(tiny_model_dir), other="embedded")
    small, embedded = figures[str(tiny_model_dir)], figures["embedded"]
    for side in (small, embedded):
        assert side["sft_steps"] == 2 and side["decode_tokens_per_s"] > 0 and side["classify_one_p50_ms"] > 0
    # The embedded model (135M parameters) holds far more memory than the 2-layer, width-64 tiny one.
    assert embedded["weights_rss_mb"] > 4 * max(small["weights_rss_mb"], 1) and figures["other_over_base"]["weights_rss_mb"] > 4
