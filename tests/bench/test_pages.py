"""The docs' benchmark page is made from recorded JSON: what `bench NAME --record` wrote is what the page shows."""

import json

import pytest

from bench.pages import MARKER, on_page_markdown, record, results_markdown


def test_a_recorded_benchmark_appears_on_the_page_with_its_command_and_figures(tmp_path):
    path = record(
        "sft-throughput", {"ratio": 1.54, "nested": {"steps": 12}}, "distill-slm bench sft-throughput", folder=tmp_path / "results"
    )
    entry = json.loads(path.read_text())
    assert entry["figures"] == {"ratio": 1.54, "nested": {"steps": 12}} and entry["command"] == "distill-slm bench sft-throughput"
    page = on_page_markdown(f"# Benchmarks\n\n{MARKER}\n", page=None, config={"docs_dir": str(tmp_path)}, files=None)
    assert "| ratio | 1.54 |" in page and "| nested.steps | 12 |" in page and MARKER not in page


def test_generalize_results_become_a_table_per_task_and_variant(tmp_path):
    figures = {
        "per_task": {
            "claims": {
                "primary_metric": "macro_f1",
                "variants": {
                    "base": {"macro_f1": 0.2039, "ci": [0.16, 0.25]},
                    "sft": {"macro_f1": 0.5635, "ci": [0.51, 0.61], "train_s": 1412.3},
                    "promoted": {"macro_f1": 0.5635, "variant": "sft"},
                },
            }
        }
    }
    record("generalize-claims", figures, "run(tasks='claims')", folder=tmp_path)
    text = results_markdown(tmp_path)
    assert "| task | base | sft | promoted |" in text
    assert "| `claims` | 0.204 (0.16-0.25) | 0.564 (0.51-0.61), 1412 s | 0.564 [sft] |" in text


def test_a_figure_that_is_not_a_number_is_refused_not_written(tmp_path):
    with pytest.raises(ValueError):
        record("generalize", {"mean": float("nan")}, "x", folder=tmp_path)
    assert not list(tmp_path.glob("*.json"))


def test_the_page_says_when_nothing_is_recorded(tmp_path):
    assert "No benchmark has been recorded" in results_markdown(tmp_path)
