"""The loop on real parts: a real Prefect server (the test harness), the nightly drift flow over a real audit log, the
deployments and their drift automation, a runner in its own process, and a real uvicorn service that ends up serving
the retrained version."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from bench.drift import write_traffic
from core.common.config import TaskConfig
from core.kinds import for_config
from core.model.loading import activate_adapter, load_model
from core.registry import Registry
from core.serving.audit import AuditLog
from core.settings import ModelSettings
from demos import creditmix
from tests.conftest import ADMIN_KEY, make_adapter

NOW = 2_000_000_000.0


def _task(tiny_model_dir: Path, root: Path, name: str = "creditmix", **drift) -> TaskConfig:
    cfg = TaskConfig.model_validate(
        {
            "name": name,
            "model": {"base_model": str(tiny_model_dir)},
            "runs_dir": str(root / "runs"),
            "work_dir": str(root / "work"),
            "drift": {"reference_size": 300, "sample_size": 300, "permutations": 200, "teacher_sample": 0} | drift,
        }
    )
    registry = Registry(cfg.runs_dir)
    adapter = make_adapter(cfg, root / f"adapter-{name}", 5)
    ref = registry.register(
        cfg.name, "sft", adapter, {"macro_f1": 0.3, "accuracy": 0.4, "n": 12}, yaml.safe_dump(cfg.model_dump(mode="json")), {}
    )
    registry.promote(cfg.name, ref, cfg.promotion.model_copy(update={"guard_min": {}}))
    return cfg


def _traffic(cfg: TaskConfig, audit: Path, n: int, seed: int, at: float, shift: str | None = None) -> None:
    kind, registry = for_config(cfg, ModelSettings()), Registry(cfg.runs_dir)
    ref = registry.aliases(cfg.name)["production"]
    model, tokenizer = load_model(cfg.model, ModelSettings())
    model = activate_adapter(model, registry.path(cfg.name, ref), name="production")
    log = AuditLog(audit)
    write_traffic(
        log,
        cfg,
        kind.decoder(model, tokenizer, registry.path(cfg.name, ref)),
        ref,
        [r["text"] for r in creditmix.generate(n, seed, shift=shift)],
        at,
    )
    log.close()


def test_nightly_drift_says_ok_in_distribution_and_drift_on_shifted_traffic_skipping_bad_records(prefect_server, tiny_model_dir, tmp_path):
    from flows.drift import nightly_drift

    cfg = _task(
        tiny_model_dir,
        tmp_path,
        teacher_sample=10,  # the teacher is down: agreement unknown, never zero, and the night goes on
    )
    cfg.teacher.backend, cfg.teacher.base_url, cfg.teacher.max_retries, cfg.teacher.timeout_s = "openai", "http://127.0.0.1:9/v1", 0, 2
    cfg.teacher.api_key_env = ""
    registry = Registry(cfg.runs_dir)
    (registry.path(cfg.name, "production") / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    audit = tmp_path / "audit" / "audit.jsonl"

    _traffic(cfg, audit, 300, seed=101, at=NOW - 20_000)
    with open(audit, "a") as f:  # a damaged line, a record of a version no longer registered, then a torn last line
        f.write("{not json\n")
        f.write(json.dumps({"at": NOW - 10, "task": cfg.name, "input": "x", "output": "Good", "adapter": "sft/v0099"}) + "\n")
        f.write('{"at": 1, "task": "creditm')
    night = nightly_drift(str(cfg.runs_dir), str(audit), now=NOW)[cfg.name]
    report = json.loads(Path(night["json"]).read_text())
    assert night["verdict"] == "ok", report["reasons"]
    assert report["window"]["requests"] == 301 and report["window"]["answered_by_production"] == 300
    skipped = report["window"]["skipped"]
    assert skipped["unparsable line"] == 1 and skipped["torn last line"] == 1
    assert skipped["adapter no longer registered (output signals)"] == 1
    assert report["quality"]["teacher_agreement"] is None and "unavailable" in report["quality"]["teacher_note"]
    assert {"input.embedding_mmd", "input.length", "output.labels", "confidence.distribution"} <= {s["name"] for s in report["signals"]}
    assert Path(night["plot"]).exists() and "**ok**" in Path(night["markdown"]).read_text()

    audit.write_text("")  # the next night: traffic from another system's export
    _traffic(cfg, audit, 300, seed=202, at=NOW + 1000, shift="strong")
    night = nightly_drift(str(cfg.runs_dir), str(audit), now=NOW + 80_000)[cfg.name]
    report = json.loads(Path(night["json"]).read_text())
    assert night["verdict"] == "drift" and report["window"]["requests"] == 300  # since the last run: the first night is not read again
    inputs = [json.loads(line)["text"] for line in Path(night["inputs"]).read_text().splitlines()]
    assert len(inputs) == 300 and all(t.startswith("customer record |") for t in inputs)

    night = nightly_drift(str(cfg.runs_dir), str(audit), now=NOW + 90_000)[cfg.name]  # nothing new: an empty window
    report = json.loads(Path(night["json"]).read_text())
    assert night["verdict"] == "ok" and report["window"]["requests"] == 0 and "fewer than drift.min_requests" in report["reasons"][0]


@pytest.mark.skipif(not os.environ.get("DISTILL_SLM_SCALE_TESTS"), reason="a cluster's workers each load a model: `make test-scale`")
@pytest.mark.parametrize("runner", ["ray", "dask"])
def test_on_a_cluster_each_task_is_checked_on_a_worker_and_a_failing_one_is_named(
    prefect_server, runner, request, tiny_model_dir, tmp_path
):
    from flows.drift import nightly_drift

    address = request.getfixturevalue(f"{runner}_cluster")
    steady, shifted = _task(tiny_model_dir, tmp_path, name="steady"), _task(tiny_model_dir, tmp_path, name="shifted")
    audit = tmp_path / "audit" / "audit.jsonl"
    _traffic(steady, audit, 300, seed=101, at=NOW - 20_000)
    _traffic(shifted, audit, 300, seed=202, at=NOW - 10_000, shift="strong")
    night = nightly_drift(str(steady.runs_dir), str(audit), tasks=["steady", "shifted", "gone"], now=NOW, **{f"{runner}_address": address})
    assert night["steady"]["verdict"] == "ok" and night["shifted"]["verdict"] == "drift"
    assert (
        night["gone"]["verdict"] == "error" and "task 'gone' has no production version" in night["gone"]["error"]
    )  # the others still had their night
    workers = {night[name]["checked_on"] for name in ("steady", "shifted")}
    assert all(not w.endswith(f"/{os.getpid()}") for w in workers)  # checked in the cluster's worker processes, not here
    report = json.loads(Path(night["shifted"]["json"]).read_text())
    assert report["window"]["requests"] == 300  # each task read only its own records from the shared log


@pytest.mark.parametrize("setting, address", [("ray_address", "127.0.0.1:1"), ("dask_address", "tcp://127.0.0.1:1")])
def test_a_cluster_address_that_does_not_answer_stops_the_night_before_any_check(prefect_server, setting, address, tmp_path):
    from core.errors import ConfigError
    from flows.drift import nightly_drift

    with pytest.raises(ConfigError, match=rf"{setting}: nothing answers at '127.0.0.1:1'"):
        nightly_drift(str(tmp_path / "runs"), str(tmp_path / "audit.jsonl"), tasks=["any"], **{setting: address})


def test_deploy_registers_the_loop_and_drift_retrains_until_the_service_serves_the_new_version(prefect_server, tiny_model_dir, tmp_path):
    """`distill-slm deploy` (its own process) serves retrain-<task> and nightly-drift; a drift night's event makes the
    automation start a retrain on the drifted inputs, which trains, promotes and reloads the running service."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL

    from core.settings import ServiceSettings
    from flows.drift import nightly_drift
    from service.main import serve_in_thread

    cfg = _task(tiny_model_dir, tmp_path)
    settings = ServiceSettings(runs_dir=cfg.runs_dir, admin_api_keys=[ADMIN_KEY], audit_log=tmp_path / "audit" / "audit.jsonl")
    srv, url = serve_in_thread(settings)
    try:
        cfg.methods = ["sft", "kd"]
        cfg.teacher.max_pool = 12
        cfg.data.train_per_class, cfg.data.eval_per_class = 8, 4
        cfg.training.batch_size, cfg.training.max_steps, cfg.training.save_steps, cfg.training.validation_per_class = 4, 2, 2, 0
        cfg.promotion.min_gain, cfg.promotion.guard_min = -1.0, {}  # any finished candidate passes: the loop is under test
        cfg.service.url = url
        task_file = tmp_path / "task.yaml"
        task_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        env = os.environ | {
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "DISTILL_SLM_ADMIN_KEY": ADMIN_KEY,
            "DISTILL_SLM_RUNS_DIR": str(cfg.runs_dir),
            "DISTILL_SLM_AUDIT_LOG": str(settings.audit_log),
        }
        runner = subprocess.Popen(
            [sys.executable, "-m", "distill_slm.cli", "deploy", str(task_file), "--cron", "30 3 * * *", "--timezone", "Europe/Berlin"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "runner.log").open("w"),  # a file, not a pipe: the flow runs' logs must never block on it
        )
        try:
            automation = _wait(lambda: _automation(Automation, f"drift-retrains-{cfg.name}"), 120, "the drift automation")
            assert automation.actions[0].parameters == {"extra_pool": "{{ event.payload.inputs }}"}
            nightly = _wait(lambda: _deployment("nightly-drift/nightly-drift"), 60, "the nightly-drift deployment")
            retrain = _deployment(f"distill/retrain-{cfg.name}")
            [schedule] = nightly.schedules
            assert schedule.schedule.cron == "30 3 * * *" and schedule.schedule.timezone == "Europe/Berlin"
            assert {"cfg", "extra_pool"} <= set(retrain.parameter_openapi_schema["properties"])  # the UI's form
            assert retrain.parameters["cfg"]["service"]["url"] == url

            before = httpx.get(url + "/readyz").json()["refs"][f"{cfg.name}:production"]
            _traffic(cfg, settings.audit_log, 200, seed=303, at=time.time() - 600, shift="strong")
            [night] = nightly_drift(str(cfg.runs_dir), str(settings.audit_log)).values()
            assert night["verdict"] == "drift"

            def served_changed():
                new = httpx.get(url + "/readyz").json()["refs"].get(f"{cfg.name}:production")
                return new is not None and new != before

            _wait(served_changed, 400, "the service serving the retrained version", tmp_path / "runner.log")

            def finished_run():  # the reload is the run's last task: its state may say Completed a moment after it
                with get_client(sync_client=True) as client:
                    [run] = client.read_flow_runs(deployment_filter=_by_id(retrain.id), limit=5, sort=FlowRunSort.START_TIME_DESC)
                return run if run.state.is_final() else None

            run = _wait(finished_run, 60, "the retrain run's final state")
            assert run.parameters["extra_pool"] == night["inputs"] and run.state.is_completed()
            traffic = {json.loads(line)["text"] for line in Path(night["inputs"]).read_text().splitlines()}
            pool = [json.loads(line)["text"] for line in (cfg.work_dir / cfg.name / "data" / "unlabeled.jsonl").read_text().splitlines()]
            assert set(pool[:12]) <= traffic  # the teacher answered the drifted traffic first
            assert Registry(cfg.runs_dir).aliases(cfg.name)["production"] != before
        finally:
            runner.terminate()
            runner.wait(timeout=60)
    finally:
        srv.should_exit = True


def _automation(cls, name):
    try:
        return cls.read(name=name)
    except ValueError:
        return None


def _deployment(name: str):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None


def _by_id(deployment_id):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))


def _wait(check, timeout_s: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}" + (f"; runner log:\n{log.read_text()[-4000:]}" if log else ""))
