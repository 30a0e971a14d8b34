"""The real `distill` flow on a real (temporary) Prefect server, then the CLI on what it registered."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.registry import Registry
from core.teachers.traces import TraceStore


def cli(*args: str) -> subprocess.CompletedProcess:
    """The real command line, in its own process."""
    return subprocess.run([sys.executable, "-m", "distill_slm.cli", *args], capture_output=True, text=True, timeout=600)


IDP_REQUIRED = {"schema_valid_rate", "field_f1", "field_precision", "field_recall", "exact_match", "corrections_per_doc"}
REQUIRED = {"accuracy", "macro_f1", "per_class", "confusion_matrix", "ece", "latency_ms_p50", "latency_ms_p95", "n"}


def test_distill_flow_runs_document_extraction(prefect_server, tiny_cfg):
    """type: idp end to end on the tiny model: invoices demo data, SFT on target JSON, teacher traces under the
    schema and KD on them, SFT -> DPO on valid-but-wrong pairs, constrained evaluation of every variant."""
    from flows.distill import distill

    cfg = type(tiny_cfg)(
        type="idp",
        model=tiny_cfg.model,
        runs_dir=tiny_cfg.runs_dir,
        work_dir=tiny_cfg.work_dir,
        max_new_tokens=200,
        methods=["sft", "kd", "dpo"],
    )
    cfg.data.train_per_class, cfg.data.eval_per_class = 8, 4
    cfg.training.batch_size, cfg.training.max_steps, cfg.training.save_steps = 4, 2, 2
    cfg.teacher.backend, cfg.teacher.model, cfg.teacher.max_pool = "hf", tiny_cfg.model.base_model, 6
    cfg.dpo.min_pairs, cfg.dpo.max_pairs = 2, 4
    summary = distill(cfg)
    assert set(summary["variants"]) == {"base", "teacher", "sft", "kd", "dpo"}
    assert summary["teacher_traces"]["traces"] == 6 and summary["teacher_traces"]["failed"] == 0
    for variant in summary["variants"].values():
        assert variant["schema_valid_rate"] == 1.0  # a random 2-layer model, and still every output validates
    registry = Registry(cfg.runs_dir)
    assert registry.methods("invoices") == ["dpo", "kd", "sft"] and "production" in registry.aliases("invoices")
    metrics = registry.metrics("invoices", "production")
    assert IDP_REQUIRED <= set(metrics) and metrics["n"] == 4
    assert "field_f1" in Path(summary["report"]).read_text()


def test_distill_flow_runs_code_generation(prefect_server, tiny_cfg, embedded_dir, tmp_path):
    """type: codegen end to end: pyfuncs demo rows (solutions run against their tests as they are read), SFT on plan and
    code, the embedded model as teacher with two candidates per task kept only where they pass (execution-verified),
    KD on those, SFT -> DPO on passing vs failing samples, every variant scored by running tests, registered, gated;
    then `distill-slm eval` on the registered adapter."""
    from demos import pyfuncs
    from flows.distill import distill

    pool = tmp_path / "specs.jsonl"  # one-step families the embedded model solves: the teacher has something to keep
    pool.write_text("".join(json.dumps({k: r[k] for k in ("id", "prompt", "tests")}) + "\n" for r in pyfuncs.generate(3, 5, (0, 1))))
    cfg = type(tiny_cfg)(type="codegen", model=tiny_cfg.model, runs_dir=tiny_cfg.runs_dir, work_dir=tiny_cfg.work_dir, max_new_tokens=48)
    cfg.methods = ["sft", "kd", "dpo"]
    cfg.data.unlabeled, cfg.data.demo.n_rows, cfg.data.train_per_class, cfg.data.eval_per_class = pool, 30, 8, 3
    cfg.training.batch_size, cfg.training.max_steps, cfg.training.save_steps = 4, 2, 2
    cfg.teacher.backend, cfg.teacher.model, cfg.teacher.candidates = "hf", str(embedded_dir), 2
    cfg.dpo.min_pairs, cfg.dpo.max_pairs, cfg.codegen.dpo_samples = 1, 4, 2
    cfg.promotion.guard_min = {}  # a random 2-layer model writes no Python
    summary = distill(cfg)

    assert set(summary["variants"]) == {"base", "teacher", "sft", "kd", "dpo"}
    traces = summary["teacher_traces"]
    assert traces["traces"] == 3 and traces["usable"] >= 1 and traces["usable"] + traces["failed"] == 3
    assert set(traces["failure_reasons"]) <= {"no candidate passed the tests"}
    for trace in TraceStore.read(traces["path"]).traces.values():
        assert len(trace["candidates"]) == 2 and (trace.get("error") is None) == any(c["passed"] for c in trace["candidates"])
    eval_dir = Path(summary["eval_dir"])
    for name in ("base", "teacher", "sft", "kd", "dpo"):
        metrics = json.loads((eval_dir / f"{name}.metrics.json").read_text())
        assert {"pass_at_1", "syntax_rate", "lint_pass_rate", "latency_ms_p50", "cost_per_1k_usd", "n"} <= set(metrics), name
        assert metrics["n"] == 3 and 0 <= metrics["pass_at_1"] <= 1
    assert json.loads((eval_dir / "teacher.metrics.json").read_text())["candidates_per_task"] == 2
    report = Path(summary["report"]).read_text()
    assert "| pass_at_1 |" in report and (eval_dir / "pass_rates.png").exists()
    registry = Registry(cfg.runs_dir)
    assert registry.methods("pyfuncs") == ["dpo", "kd", "sft"]
    assert registry.task_config("pyfuncs").promotion.primary_metric == "pass_at_1"

    done = cli("eval", "--task", "pyfuncs", "--adapter", "sft", "--data", str(cfg.work_dir / "pyfuncs" / "data" / "eval.jsonl"),
               "--runs-dir", str(cfg.runs_dir), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads(done.stdout)
    assert metrics["adapter"] == "pyfuncs/sft/v0001" and metrics["n"] == 3 and "failures" in metrics


def test_distill_flow_trains_evaluates_registers_promotes(prefect_server, tiny_cfg, monkeypatch):
    from core.errors import ServiceReloadFailed
    from flows.distill import distill

    tiny_cfg.methods = ["sft"]
    tiny_cfg.training.max_steps = 3
    tiny_cfg.promotion.guard_min = {}  # a 2-layer random model cannot clear real guards
    summary = distill(tiny_cfg)

    assert set(summary["variants"]) == {"base", "sft"}
    assert summary["variants"]["sft"]["registered"] == "sft/v0001"
    assert summary["variants"]["sft"]["promotion"]["passed"]
    registry = Registry(tiny_cfg.runs_dir)
    assert registry.aliases("creditmix") == {"production": "sft/v0001"}
    metrics = registry.metrics("creditmix", "production")
    assert REQUIRED <= set(metrics) and REQUIRED <= set(metrics["baseline"])
    assert metrics["n"] == 12 and sum(map(sum, metrics["confusion_matrix"])) == 12
    report = tiny_cfg.work_dir / "creditmix"
    assert list(report.glob("eval-*/report.md")) and list(report.glob("eval-*/confusion.png"))

    # A rerun finds the finished adapter instead of training again, registers and promotes the next version. The service
    # it should then reload is down: the run fails naming the setting, and nothing registered or promoted is undone.
    tiny_cfg.service.url = "http://127.0.0.1:9"
    monkeypatch.setenv("DISTILL_SLM_ADMIN_KEY", "some-key")
    with pytest.raises(ServiceReloadFailed, match=r"service.url http://127.0.0.1:9: cannot reach the service"):
        distill(tiny_cfg)
    assert registry.aliases("creditmix")["production"] == "sft/v0002"

    eval_file = tiny_cfg.work_dir / "creditmix" / "data" / "eval.jsonl"
    runs = str(tiny_cfg.runs_dir)
    done = cli("eval", "--task", "creditmix", "--adapter", "production", "--data", str(eval_file), "--runs-dir", runs, "--json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert REQUIRED <= set(printed) and printed["adapter"] == "creditmix/sft/v0002"  # production moved to the rerun

    done = cli("registry", "show", "creditmix", "--runs-dir", runs, "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert [v["version"] for v in shown["methods"]["sft"]] == ["v0001", "v0002"]
    assert shown["aliases"]["production"] == "sft/v0002"  # same adapter, equal metrics: min_gain 0 passes

    assert cli("registry", "rollback", "creditmix", "--runs-dir", runs).returncode == 0
    assert registry.aliases("creditmix")["production"] == "sft/v0001"


def test_distill_flow_with_teacher_traces_and_kd(prefect_server, tiny_cfg):
    from flows.distill import distill

    tiny_cfg.methods = ["kd"]
    tiny_cfg.training.max_steps = 2
    tiny_cfg.promotion.guard_min = {}
    tiny_cfg.teacher.max_pool, tiny_cfg.teacher.k_shot = 10, 2
    summary = distill(tiny_cfg)

    assert list(summary["variants"]) == ["base", "teacher", "kd"]
    traces = summary["teacher_traces"]
    assert traces["traces"] == 10 and traces["asked"] == 10 and traces["failed"] == 0
    assert summary["variants"]["kd"]["registered"] == "kd/v0001"
    for name in ("base", "teacher", "kd"):
        assert summary["variants"][name]["cost_per_1k_usd"] > 0 and summary["variants"][name]["latency_ms_p50"] > 0
    report = Path(summary["report"]).read_text()
    assert "| cost_per_1k_usd |" in report and "| tokens_per_request |" in report and "teacher" in report
    assert "## Cascade: kd escalating to the teacher" in report
    cascade = json.loads((Path(summary["eval_dir"]) / "kd.metrics.json").read_text())["cascade"]
    assert [row["threshold"] for row in cascade] == tiny_cfg.escalation.report_thresholds
    assert all(0 <= row["escalation_rate"] <= 1 for row in cascade)

    # A rerun pays the teacher nothing and trains nothing: traces and adapter are found on disk.
    again = distill(tiny_cfg)
    assert again["teacher_traces"]["asked"] == 0 and again["teacher_traces"]["cached"] == 10
    assert again["variants"]["kd"]["registered"] == "kd/v0002"


def test_distill_flow_self_trains_and_distils_from_its_sft_adapter(prefect_server, tiny_cfg):
    """sft -> the SFT adapter labels the validation rows the deliberate way and zero-shot; the better labels the pool ->
    selftrain on gold plus its confident labels; KD's embedded teacher is the deliberate one (its pool answers are
    asked once when that is also self-training's labeler)."""
    from flows.distill import distill

    tiny_cfg.methods = ["sft", "selftrain", "kd"]
    tiny_cfg.training.max_steps, tiny_cfg.training.validation_per_class = 2, 2
    tiny_cfg.promotion.guard_min = {}
    tiny_cfg.teacher.max_pool, tiny_cfg.teacher.k_shot = 10, 2
    tiny_cfg.self_training.min_precision = 0.01  # a random model: keep whatever it says
    summary = distill(tiny_cfg)

    assert list(summary["variants"]) == ["base", "teacher", "sft", "selftrain", "kd"]
    pool = summary["pool"]
    assert pool["kept"] == 10 and pool["rows"] == pool["kept"] + pool["duplicates_dropped"] + pool["held_out_inputs_dropped"]
    labeled, choice = summary["self_training_traces"], summary["self_training_labeler"]
    assert set(choice["validation"]) == {"deliberate", "zero-shot"} and choice["mode"] in choice["validation"]
    assert choice["validation"][choice["mode"]] == max(choice["validation"].values())
    deliberate = choice["mode"] == "deliberate"
    assert (
        labeled["asked"] == 10 and labeled["teacher"].startswith("deliberate:" if deliberate else "hf:") and "+sft-" in labeled["teacher"]
    )
    kd_pool = summary["teacher_traces"]
    assert kd_pool["teacher"].startswith("deliberate:") and kd_pool["asked"] == (0 if deliberate else 10)  # asked once per teacher
    ref = summary["variants"]["selftrain"]["registered"]
    assert ref == "selftrain/v0001"
    chosen = json.loads((Registry(tiny_cfg.runs_dir).path("creditmix", ref) / "self_training.json").read_text())
    assert chosen["pool_answers"] == 10 and chosen["threshold"]["answers"] == 6 and chosen["gold_rows"] > 0
    assert chosen["labeler_choice"] == choice
    report = Path(summary["report"]).read_text()
    assert "## Self-training against the SFT adapter" in report and "chosen on the validation rows" in report
    # Each adapter's gain over SFT on the same rows, with its paired interval, in the report and the registered metrics.
    assert "## Gains over SFT on the same rows (paired bootstrap)" in report and "- kd vs sft: macro_f1" in report
    paired = Registry(tiny_cfg.runs_dir).metrics("creditmix", ref)["paired"]
    assert paired["reference"] == "sft" and paired["metric"] == "macro_f1" and paired["interval"][0] <= paired["interval"][1]
    # Three adapters gated, production moved once (to the best that passed): one rollback undoes the run.
    promotions = [summary["variants"][m]["promotion"] for m in ("sft", "selftrain", "kd")]
    assert all(p["passed"] for p in promotions) and sum(p["promoted"] for p in promotions) == 1
    registry = Registry(tiny_cfg.runs_dir)
    assert len(registry.describe("creditmix")["history"]) == 1
    registry.rollback("creditmix")
    assert registry.aliases("creditmix") == {}


def test_distill_flow_sft_then_dpo(prefect_server, tiny_cfg):
    from flows.distill import distill

    tiny_cfg.methods = ["sft", "dpo"]
    tiny_cfg.training.max_steps = 2
    tiny_cfg.promotion.guard_min = {}
    summary = distill(tiny_cfg)

    assert list(summary["variants"]) == ["base", "sft", "dpo"]
    assert summary["variants"]["dpo"]["registered"] == "dpo/v0001"
    report = Path(summary["report"]).read_text()
    assert "## DPO against the SFT adapter" in report
    pairs = json.loads((Registry(tiny_cfg.runs_dir).path("creditmix", "dpo/v0001") / "pairs.json").read_text())
    # 8 rows per class, each made a pair; those that would tilt a label's prior are dropped
    assert pairs["gold"] + pairs["dropped_to_balance"] == 24 and pairs["dropped_identical"] == 0


def test_unusable_teacher_fails_the_flow_at_its_first_step(prefect_server, tiny_cfg, monkeypatch):
    from core.errors import TeacherUnavailable
    from flows.distill import distill

    monkeypatch.delenv("DISTILL_TEST_MISSING_KEY", raising=False)
    monkeypatch.setenv("DISTILL_SLM_SECRET_ENV_ALLOWED", '["DISTILL_TEST_MISSING_KEY"]')  # the operator allows the variable
    tiny_cfg.methods = ["sft", "kd"]
    tiny_cfg.teacher.backend, tiny_cfg.teacher.model, tiny_cfg.teacher.api_key_env = "openai", "gpt-x", "DISTILL_TEST_MISSING_KEY"
    with pytest.raises(TeacherUnavailable, match="teacher.api_key_env"):
        distill(tiny_cfg)
    assert not (tiny_cfg.runs_dir / "creditmix").exists() and not list(tiny_cfg.work_dir.glob("creditmix/sft-*"))


def test_bad_data_stops_the_flow_before_training(prefect_server, tiny_cfg, tmp_path):
    from core.errors import DataError
    from flows.distill import distill

    bad = tmp_path / "train.csv"
    bad.write_text("text,label\nfine,Good\nalso fine,Platinum\n")
    tiny_cfg.data.train = bad
    with pytest.raises(DataError, match=r"train.csv:3: field 'label'"):
        distill(tiny_cfg)
    assert not tiny_cfg.runs_dir.exists()


def test_cli_refuses_bad_eval_data_naming_file_line_field(tmp_path):
    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"text": "a", "label": "Good"}\n{"label": "Bad"}\n')
    done = cli("eval", "--task", "creditmix", "--adapter", "base", "--data", str(bad), "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode == 1
    assert f"{bad}:2: field 'text': missing or empty" in done.stderr


def test_a_failed_method_leaves_the_others_evaluated_registered_and_gated(prefect_server, tiny_cfg):
    """DPO cannot find enough pairs (a real DataError, raised mid-run): SFT is still evaluated, registered and promoted,
    and the run then fails naming DPO and why."""
    from core.errors import MethodsFailed
    from flows.distill import distill

    tiny_cfg.methods = ["sft", "dpo"]
    tiny_cfg.training.max_steps = 2
    tiny_cfg.promotion.guard_min = {}
    tiny_cfg.dpo.min_pairs = 10_000
    with pytest.raises(MethodsFailed, match=r"dpo: DataError: .*fewer than dpo.min_pairs=10000.*Finished, evaluated and gated: \['sft'\]"):
        distill(tiny_cfg)
    registry = Registry(tiny_cfg.runs_dir)
    assert registry.methods("creditmix") == ["sft"] and registry.aliases("creditmix") == {"production": "sft/v0001"}


def test_cli_run_stops_on_bad_data_in_seconds_before_any_prefect_server(tmp_path):
    import time

    bad = tmp_path / "train.jsonl"
    bad.write_text('{"text": "a", "label": "Good"}\n{"text": "b", "label": "Gold"}\n')
    task = tmp_path / "task.yaml"
    task.write_text(f"name: creditmix\ndata: {{train: {bad}}}\nwork_dir: {tmp_path / 'work'}\n")
    start = time.perf_counter()
    done = cli("run", str(task), "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode == 1 and f"{bad}:2: field 'label': unknown label 'Gold'" in done.stderr
    assert "temporary server" not in done.stderr.lower() and time.perf_counter() - start < 60


@pytest.mark.skipif(not os.environ.get("DISTILL_SLM_SCALE_TESTS"), reason="two methods trained on a cluster: `make test-scale`")
@pytest.mark.parametrize("runner", ["ray", "dask"])
def test_on_a_cluster_methods_that_need_none_of_each_other_train_side_by_side(prefect_server, runner, request, tiny_cfg):
    """sft and kd (its teacher not started from this run's SFT adapter): one wave, each method a task on a cluster worker;
    the flow then evaluates, registers and gates both as it does after one-at-a-time training."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    from core.common.config import ScaleConfig
    from flows.distill import distill

    tiny_cfg.methods = ["sft", "kd"]
    tiny_cfg.teacher.from_sft = False
    tiny_cfg.training.max_steps = 2
    tiny_cfg.promotion.guard_min = {}
    tiny_cfg.teacher.max_pool, tiny_cfg.teacher.k_shot = 10, 2
    tiny_cfg.scale = ScaleConfig(runner=runner, address=request.getfixturevalue(f"{runner}_cluster"))
    api = PREFECT_API_URL.value()
    side_by_side = {"flows": {"name": {"any_": ["methods-side-by-side"]}}}
    before = {run["id"] for run in httpx.post(f"{api}/flow_runs/filter", json=side_by_side).json()}  # the other engine's run
    summary = distill(tiny_cfg)
    assert list(summary["variants"]) == ["base", "teacher", "sft", "kd"]
    assert summary["teacher_traces"]["traces"] == 10  # what KD's step added to the summary came back from its worker
    assert {summary["variants"][m]["registered"] for m in ("sft", "kd")} == {"sft/v0001", "kd/v0001"}
    runs = [run for run in httpx.post(f"{api}/flow_runs/filter", json=side_by_side).json() if run["id"] not in before]
    assert [run["state_type"] for run in runs] == ["COMPLETED"]
    tasks = httpx.post(f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [runs[0]["id"]]}}}).json()
    assert sorted(t["name"].split("-")[0] for t in tasks if t["name"].startswith("train_method")) == ["train_method", "train_method"]
