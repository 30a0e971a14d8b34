"""bench demo, whole and quick: the `distill` flow on the demo task into a fresh registry, its figures read from the run.
(Minutes on the embedded model: `make test-bench`.)"""

import os

import pytest

from bench.demo import run

pytestmark = pytest.mark.skipif(
    not os.environ.get("DISTILL_SLM_BENCH_TESTS"), reason="a whole flow on the embedded model: `make test-bench`"
)


def test_the_quick_demo_runs_the_flow_and_reports_its_own_figures(prefect_server):
    figures = run(quick=True)
    assert figures["gain_over_base"] == round(figures["sft_macro_f1"] - figures["base_macro_f1"], 4)
    assert figures["target_gain_ge_0.20"] == (figures["gain_over_base"] >= 0.20) and os.path.exists(figures["report"])
    assert isinstance(figures["promoted"], bool) and figures["wall_s"] > 0
