"""The evaluate task against a real (temporary) Prefect server: base and a candidate scored on the eval split, the
metrics and report written, and the leaderboard and report published as artifacts the UI shows."""

import json
from pathlib import Path

import httpx
from prefect.settings import PREFECT_API_URL

from tasks.artifacts import artifact_key
from tasks.evaluate import evaluate_task
from tasks.prepare import prepare_data
from tests.conftest import make_adapter


def _latest(key: str) -> dict:
    """The newest artifact under `key`, read over the server's REST API (this prefect's client sends filters it left
    out as nulls, which its server refuses)."""
    url = PREFECT_API_URL.value() + "/artifacts/filter"
    body = {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1, "offset": 0}
    found = httpx.post(url, json=body).raise_for_status().json()
    assert found, f"no artifact {key!r}"
    return found[0]


def test_evaluate_writes_each_variants_metrics_and_publishes_the_leaderboard(prefect_server, tiny_cfg, tmp_path):
    tiny_cfg.name = "evaluated"
    prepared = prepare_data(tiny_cfg)
    adapter = make_adapter(tiny_cfg, tmp_path / "adapter", seed=1)
    out = Path(evaluate_task(tiny_cfg, prepared["eval"], {"sft": str(adapter)}, str(tmp_path / "eval")))
    base, sft = (json.loads((out / f"{v}.metrics.json").read_text()) for v in ("base", "sft"))
    assert base["n"] == sft["n"] == 12  # the eval split: 4 rows of each of 3 labels
    assert 0.0 <= sft["macro_f1"] <= 1.0 and (out / "report.md").exists()
    leaderboard = _latest(artifact_key("evaluated", "leaderboard"))
    rows = {row["variant"]: row for row in json.loads(leaderboard["data"])}
    assert set(rows) == {"base", "sft"} and rows["sft"]["macro_f1"] == sft["macro_f1"] and rows["sft"]["n"] == 12
    assert "sft" in _latest(artifact_key("evaluated", "evaluation"))["data"]  # the report, as markdown
