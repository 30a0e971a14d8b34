"""bench small-data, quick, on one task: SFT, the labeler chosen on validation, self-training and KD from it, each scored
on fresh rows. (Minutes on the embedded model: `make test-bench`.)"""

import os

import pytest

from bench.small_data import run

pytestmark = pytest.mark.skipif(
    not os.environ.get("DISTILL_SLM_BENCH_TESTS"), reason="four trainings on the embedded model: `make test-bench`"
)


def test_a_quick_run_scores_every_variant_and_says_which_labeler_it_chose():
    figures = run(quick=True, tasks="creditmix")["creditmix"]
    assert set(figures["macro_f1"]) == {"base", "supervised", "self_trained", "kd", "labeler"}
    chosen = figures["labeler_mode"]
    assert chosen["chosen"] in chosen["validation_macro_f1"]
    assert chosen["validation_macro_f1"][chosen["chosen"]] == max(chosen["validation_macro_f1"].values())
    assert figures["self_training_gain"] == round(figures["macro_f1"]["self_trained"] - figures["macro_f1"]["supervised"], 4)
