"""Shared fixtures: the real embedded model, and a tiny model built from its config and tokenizer.

The tiny model keeps the suite fast (2 layers, width 64) while every token, chat template and
label id is the real SmolLM2 tokenizer's; tests that need real language ability use the
embedded SmolLM2-135M-Instruct itself.
"""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# A run waiting for its deployment's concurrency slot asks the test server again every 2 s, not Prefect's 30.
os.environ.setdefault("PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # Each test worker (and every service or CLI process it starts, which inherits this) gets its share of the cores:
    # two workers each running torch on every core oversubscribe a 2-core machine, and OpenMP's spinning threads then
    # make the slowest tests 2-4x slower than alone (the code-generation flow test: 80 s alone, 299 s in the suite).
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))
    os.environ.setdefault("MKL_NUM_THREADS", str(_share))

import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from core.common.ports import free_port  # noqa: E402
from core.settings import ModelSettings


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    from core.model.loading import fetch_embedded_model

    return fetch_embedded_model(ModelSettings().models_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(embedded_dir: Path, tmp_path_factory) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(embedded_dir)
    config.update(
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    out = tmp_path_factory.mktemp("tiny-smollm2")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(embedded_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def prefect_server():
    """A real, temporary Prefect server (SQLite) for the flow and task tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def tiny_cfg(tiny_model_dir: Path, tmp_path: Path):
    """The demo task config on the tiny model, with small splits and a private registry."""
    from core.common.config import TaskConfig

    cfg = TaskConfig()
    cfg.model.base_model = str(tiny_model_dir)
    cfg.runs_dir = tmp_path / "runs"
    cfg.work_dir = tmp_path / "work"
    cfg.data.train_per_class, cfg.data.eval_per_class = 8, 4
    cfg.training.batch_size, cfg.training.save_steps = 4, 2
    return cfg


# A real service for the service tests and the openai teacher's tests: uvicorn on a loopback port
# over a registry of two adapters (random LoRA weights on the tiny model), started once per session.
ADMIN_KEY = "test-admin-key"


def make_adapter(cfg, out, seed):
    """A LoRA adapter with random (large) weights: distinct answers from the base, without training."""
    from core.common.config import LoraSettings
    from core.model.loading import attach_lora, load_model

    model, _ = load_model(cfg.model, ModelSettings())
    peft_model = attach_lora(model, LoraSettings(r=4, top_layers=None))
    torch.manual_seed(seed)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    peft_model.save_pretrained(out)
    return out


def creditmix_versions(tiny_model_dir: Path, root: Path, seeds=(1,), macro_f1=lambda seed: 0.5, eval_sha256: str = "demo"):
    """A registry under `root/runs` holding one `creditmix` SFT version per seed (`make_adapter` weights) on the tiny
    model, nothing promoted (`eval_sha256`: the eval rows their metrics claim, which the gate compares); returns the
    registry and the task config the versions carry."""
    import yaml

    from core.common.config import TaskConfig
    from core.registry import Registry

    cfg = TaskConfig()
    cfg.model.base_model = str(tiny_model_dir)
    registry, config_yaml = Registry(root / "runs"), yaml.safe_dump(cfg.model_dump(mode="json"))
    for seed in seeds:
        adapter = make_adapter(cfg, root / f"adapter{seed}", seed)
        registry.register("creditmix", "sft", adapter, {"macro_f1": macro_f1(seed)}, config_yaml, {"eval_sha256": eval_sha256})
    return registry, cfg


FINE_TUNED = "ft:gpt-4o-mini-2024-07-18:acme::tickets1"
SCHEMA_COMPILE_S = 0.5  # the service fixture's budget for compiling a request's schema (small ones take milliseconds)


@pytest.fixture(scope="session")
def server(tiny_model_dir, tmp_path_factory):
    import yaml

    from core.common.config import TaskConfig
    from core.settings import ServiceSettings
    from service.main import serve_in_thread

    root = tmp_path_factory.mktemp("service")
    registry, cfg = creditmix_versions(tiny_model_dir, root, seeds=(1, 2), macro_f1=lambda seed: 0.5 + seed / 10)
    registry.promote("creditmix", "sft/v0001")
    # A document-extraction task beside it (the invoices demo schema), served by the same base model.
    idp = TaskConfig(type="idp", model=cfg.model, max_new_tokens=200)
    registry.register(
        "invoices", "sft", make_adapter(idp, root / "adapter-idp", 3), {"field_f1": 0.1}, yaml.safe_dump(idp.model_dump(mode="json")), {}
    )
    registry.promote("invoices", "sft/v0001", idp.promotion.model_copy(update={"guard_min": {}}))  # only gated versions are served
    settings = ServiceSettings(
        runs_dir=root / "runs",
        admin_api_keys=[ADMIN_KEY],
        audit_log=root / "audit" / "audit.jsonl",
        schema_compile_s=SCHEMA_COMPILE_S,
        fast_decode="fp16+bf16",  # pinned: the same decode path whatever this CPU's speed check would say
        rate_limit_per_s=10_000,  # every test calls from loopback without a key (one caller): rates are tested apart
        rate_limit_burst=10_000,
        model_names={FINE_TUNED: "creditmix:production"},  # a client's old OpenAI fine-tuned model name
    )
    srv, base = serve_in_thread(settings)
    yield {"url": base, "registry": registry, "settings": settings}
    srv.should_exit = True


def batch_size_counts(url: str, task: str, variant: str) -> dict[str, float]:
    """The service's batch-size histogram for one task and variant, bucket bound -> cumulative count (from /metrics)."""
    import httpx

    return {
        line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in httpx.get(url + "/metrics").text.splitlines()
        if line.startswith("distill_slm_batch_size_bucket{") and f'task="{task}",variant="{variant}"' in line
    }


# -- crash tests: real subprocesses killed with SIGKILL at seeded random moments ----------------------------
def kills_path() -> Path:
    """One JSON line per kill, for the summary printed at the end of the run. A file, not a list: under pytest-xdist the
    kills happen in worker processes and the summary is printed by the controller. The controller's process id names
    it; the workers are its children."""
    import tempfile

    owner = os.getppid() if "PYTEST_XDIST_WORKER" in os.environ else os.getpid()
    return Path(tempfile.gettempdir()) / f"distill-test-kills-{owner}.jsonl"


def kill_at_random_moment(args: list[str], ready, rng, max_delay_s: float, what: str, env: dict | None = None) -> dict:
    """Start `python args...`, wait until it is ready (the line `ready` on its stdout, or the callable `ready()` true),
    let it run a random while, SIGKILL it; return the kill."""
    import signal
    import subprocess
    import sys
    import time

    child = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    if callable(ready):
        deadline = time.monotonic() + 180
        while not ready():
            assert child.poll() is None, f"{what}: the child exited before it was ready (code {child.returncode})"
            assert time.monotonic() < deadline, f"{what}: not ready within 180 s"
            time.sleep(0.2)
    else:
        for line in child.stdout:
            if line.strip() == ready:
                break
        else:
            raise AssertionError(f"{what}: the child exited before it was ready (code {child.wait()})")
    delay = rng.uniform(0, max_delay_s)
    time.sleep(delay)
    finished = child.poll() is not None
    child.send_signal(signal.SIGKILL)
    child.wait()
    kill = {"what": what, "delay_s": round(delay, 3), "finished_before_kill": finished}
    import json

    with open(kills_path(), "a") as log:
        log.write(json.dumps(kill) + "\n")
    return kill


# The longest test files (seconds on CI's 2 cores), first. `--dist loadfile` hands whole files to the two workers in
# collection order; a long file collected last (flows/ sorts late) leaves one worker idle while the other finishes it.
LONGEST_FIRST = [
    "tests/flows/test_distill.py",
    "tests/core/training/test_sft_trainer.py",
    "tests/flows/test_drift.py",
    "tests/core/serving/test_audit.py",
    "tests/core/teachers/test_traces.py",
    "tests/core/model/test_fast_decode.py",
    "tests/core/evaluation/test_code_metrics.py",
    "tests/core/model/test_continuous.py",
    "tests/distill_slm/test_cli.py",
    "tests/flows/test_server.py",
]


def pytest_collection_modifyitems(items):
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order


def pytest_terminal_summary(terminalreporter):
    import json

    if "PYTEST_XDIST_WORKER" in os.environ:  # a worker's summary goes nowhere, and must not take the controller's file
        return
    path = kills_path()
    kills = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    path.unlink(missing_ok=True)
    if kills:
        by_what: dict[str, int] = {}
        for kill in kills:
            by_what[kill["what"]] = by_what.get(kill["what"], 0) + 1
        landed = sum(not k["finished_before_kill"] for k in kills)
        terminalreporter.write_line(
            f"crash tests: {len(kills)} SIGKILLs ({landed} mid-work) at seeded random moments: "
            + ", ".join(f"{what} {n}" for what, n in sorted(by_what.items()))
            + "; every check after them passed (a failed one fails its test)"
        )


# A real Ray cluster for the scale-out tests (the teacher's pool, sharded evaluation): started once per session.
RAY = [sys.executable, "-m", "ray.scripts.scripts"]


@pytest.fixture(scope="session")
def ray_cluster():
    """A head node and one worker node, one CPU each, in their own processes (Ray's own daemons)."""
    port = free_port()
    # Ray runs its workers at nice 15 by default: beside the suite's other tests they would wait minutes for a core.
    # Token authentication off for this loopback cluster, in the daemons and this driver alike (a token a local
    # `ray.init` once left in ~/.ray would otherwise switch some of them on).
    pinned = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_niceness": "0", "RAY_AUTH_MODE": "disabled"}
    saved = {k: os.environ.get(k) for k in pinned}
    os.environ.update(pinned)
    env = dict(os.environ)
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's unix sockets live under it (at most 107 bytes)
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    try:
        ray_command("start", "--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", str(temp), *common, env=env)
        ray_command("start", "--address", f"127.0.0.1:{port}", *common, env=env)
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        ray.shutdown()
        subprocess.run([*RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ray_command(*args: str, env: dict) -> None:
    done = subprocess.run([*RAY, *args], env=env, capture_output=True, text=True, timeout=180)
    if done.returncode:
        pytest.fail(f"ray {' '.join(args[:2])} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


# A real Dask cluster for the same tests on the other engine: a scheduler and two worker processes (`dask scheduler`,
# `dask worker`, as a team starts them), once per session.
@pytest.fixture(scope="session")
def dask_cluster():
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    daemons = [subprocess.Popen([bin_dir / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **quiet)]
    try:
        check_reachable_soon(f"127.0.0.1:{port}", daemons[0])
        for _ in range(2):
            worker = [bin_dir / "dask", "worker", address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"]
            daemons.append(subprocess.Popen(worker, **quiet))
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for daemon in reversed(daemons):
            daemon.terminate()
        for daemon in daemons:
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()


def check_reachable_soon(host_port: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    import socket
    import time

    host, port = host_port.rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args} ended with {process.returncode} before it listened")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"nothing listened at {host_port} within {timeout_s} s")
