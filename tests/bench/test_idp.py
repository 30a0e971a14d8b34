"""bench idp, whole and quick: SFT, KD from the deliberate teacher and DPO on the invoices demo, every variant decoded under
the schema; a second run reuses the trained adapters and only evaluates. (Minutes on the embedded model: `make test-bench`.)"""

import json
import os
from pathlib import Path

import pytest

from bench.idp import run

pytestmark = pytest.mark.skipif(
    not os.environ.get("DISTILL_SLM_BENCH_TESTS"), reason="three trainings on the embedded model: `make test-bench`"
)


def test_every_variant_is_schema_valid_and_a_second_run_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the bench caches under runs/.bench/ of the working folder
    figures = run(quick=True)
    assert figures["target_all_valid"] and {"base", "sft", "kd", "dpo", "teacher"} <= set(figures)
    stats = Path("runs/.bench/idp-quick/sft-adapter/train_stats.json")
    written = stats.stat().st_mtime_ns
    again = run(quick=True)
    assert stats.stat().st_mtime_ns == written  # cached: the same adapters, evaluated again (the same answers; other timings)
    assert {k: again["sft"][k] for k in ("field_f1", "schema_valid_rate")} == {
        k: figures["sft"][k] for k in ("field_f1", "schema_valid_rate")
    }
    assert json.loads(stats.read_text())["steps"] == 2
