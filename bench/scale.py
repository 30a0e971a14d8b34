"""Teacher fan-out on Ray and on Dask against an endpoint of fixed latency: the rate against the ideal, inputs asked
twice, inputs lost when a worker is killed mid-run.

The endpoint (its own process) answers every request after `latency_s`, however many are in flight, and counts the
requests per input; the pool is answered by `workers` workers (a local Ray instance or a local Dask cluster,
`scale.runner: ray | dask`), each with the openai backend at `concurrency` requests in flight. The ideal rate is
workers x concurrency / latency. The second run kills one worker process (SIGKILL) once a third of the answers are
written: Ray restarts the actor, Dask's nanny the worker, and the shards it held are sent again; every input must still
be answered once in the cache.

Data-parallel training (`--tasks ddp`): SFT of the embedded model on demo rows for the same steps in one process and in
two DDP processes (`scale.train_processes: 2`, gloo): tokens/s and the loss curves side by side. On 2 cores no speed-up
is expected (each process gets one core); the figure shows the multi-GPU path runs and learns as one process does.

Two tasks on a work pool (`--tasks pool`): a real Prefect server, a process work pool and two `prefect worker`
processes; two different tasks' retrains (KD, its teacher the endpoint above at `pool_latency_s` a request, one request
at a time) run both at once, then one after the other: the wall times' ratio (target <= 0.6). What waits on the teacher
overlaps; the CPU-bound part (each run's start, data, 4 training steps and evaluation of the embedded model) shares the
2 cores.

Sharded evaluation (`--tasks eval`): the same evaluation in this process and through the Ray and the Dask path with one
worker each.

    distill-slm bench scale [--tasks fanout,pool,ddp,eval] [--quick] [--json]   # targets: >= 0.8 of the ideal, 0 asked twice, 0 lost
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import uvicorn
from fastapi import FastAPI, Request

from core.common.cluster import connect
from core.common.config import ScaleConfig, TaskConfig
from core.common.ports import free_port
from core.common.rows import Example
from core.kinds import for_config, teacher_loader
from core.methods import launch
from core.settings import ModelSettings
from core.teachers.traces import TraceStore, generate_traces


def _endpoint(port: int, latency_s: float) -> None:
    """An OpenAI-compatible chat endpoint: every answer after `latency_s`, requests counted per input."""
    app, asked = FastAPI(), Counter()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        body = await request.json()
        asked[body["messages"][-1]["content"]] += 1
        await asyncio.sleep(latency_s)
        return {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Good"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 1},
        }

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "remote-teacher", "object": "model"}]}

    @app.get("/asked")
    async def counts() -> dict:
        return {"requests": sum(asked.values()), "inputs": len(asked), "asked_twice": sum(n > 1 for n in asked.values())}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=4096)


def _worker_pid(cluster) -> int:
    """A teacher worker's process: Ray's actor (found by its class in the command line), or a Dask worker."""
    if cluster.scale.runner == "dask":
        return next(iter(cluster.client.run(os.getpid).values()))
    return next(p for p in psutil.process_iter(["cmdline"]) if "_TeacherWorker" in " ".join(p.info["cmdline"] or [])).pid


def _cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _pass(cfg: TaskConfig, rows: list[Example], url: str, kill_after: int | None, endpoint_pid: int) -> dict:
    before = httpx.get(f"{url}/asked").json()
    cluster = connect(cfg.scale)
    cpu_before = {"endpoint": _cpu_s(endpoint_pid), "this_process": _cpu_s(os.getpid())}
    with tempfile.TemporaryDirectory() as tmp:
        store = TraceStore(Path(tmp) / "traces.jsonl")
        extend, killed, first_write = store.extend, [], []

        def extend_watched(traces: list[dict]) -> None:
            extend(traces)
            if not first_write:  # when the workers are up: the steady rate is counted from here
                first_write.append((time.perf_counter(), len(store.traces)))
            if kill_after is not None and not killed and len(store.traces) >= kill_after:  # a worker process dies now
                victim = _worker_pid(cluster)
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        store.extend = extend_watched
        start = time.perf_counter()
        summary = generate_traces(
            rows,
            store,
            teacher_loader(cfg, ModelSettings()),
            progress=False,
            check=for_config(cfg, ModelSettings()).teacher_task().endpoint().check,
            cluster=cluster,
        )
        end = time.perf_counter()
        elapsed = end - start
        steady_rate = (len(rows) - first_write[0][1]) / (end - first_write[0][0])
        # Where the 2 cores went: the endpoint (a stand-in for a remote model, on this machine here) and the writer.
        cpu = {
            f"{k}_cpu_share": round((_cpu_s(pid) - cpu_before[k]) / elapsed, 2)
            for k, pid in (("endpoint", endpoint_pid), ("this_process", os.getpid()))
        }
        _close(cluster)
        store.close()
        written = len([line for line in (Path(tmp) / "traces.jsonl").read_text().splitlines() if line])
    after = httpx.get(f"{url}/asked").json()
    return {
        "inputs": len(rows),
        "elapsed_s": round(elapsed, 2),
        "rate_per_s": round(len(rows) / elapsed, 1),
        "first_answers_after_s": round(first_write[0][0] - start, 1),
        "steady_rate_per_s": round(steady_rate, 1),
        "failed": summary["failed"],
        "lines_written": written,
        "lost": len(rows) - written,
        "asked_twice": after["asked_twice"] - before["asked_twice"],
        "requests": after["requests"] - before["requests"],
        "killed_worker_pid": killed[0] if killed else None,
    } | cpu


def _loss_curve(checkpoint_dir: Path) -> list[list[float]]:
    """[step, training loss] as the Trainer logged them (every 5 steps), from the last checkpoint's state."""
    last = max(checkpoint_dir.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    history = json.loads((last / "trainer_state.json").read_text())["log_history"]
    return [[h["step"], round(h["loss"], 4)] for h in history if "loss" in h]


def data_parallel(quick: bool = False) -> dict:
    """The same SFT steps of the embedded model in one process and in two DDP processes (gloo on this CPU)."""
    from demos import creditmix

    steps = 10 if quick else 40
    rows = [Example(**r) for r in creditmix.generate(8 * steps, seed=5)]
    sides = {}
    for processes in (1, 2):
        cfg = TaskConfig()
        cfg.scale.train_processes = processes
        cfg.training.max_steps, cfg.training.save_steps = steps, steps
        with tempfile.TemporaryDirectory() as tmp:
            _, stats, _ = launch.train("sft", cfg, ModelSettings(), {"rows": rows}, Path(tmp) / "ck", Path(tmp) / "adapter")
            sides[processes] = {
                "tokens_per_s": round(stats.tokens_per_s, 1),
                "train_s": round(stats.train_runtime_s, 1),
                "final_loss": round(stats.final_loss, 4),
                "loss_curve": _loss_curve(Path(tmp) / "ck"),
            }
    return {
        "steps": steps,
        "batch_size": 8,
        "one_process": sides[1],
        "two_processes_ddp": sides[2],
        "ddp_over_one_tokens_per_s": round(sides[2]["tokens_per_s"] / sides[1]["tokens_per_s"], 2),
        "final_loss_difference": round(abs(sides[2]["final_loss"] - sides[1]["final_loss"]), 4),
        "note": "2 cores: one per DDP process, so no speed-up is expected; the same steps over the same rows",
    }


def sharded_evaluation(quick: bool = False, runners: tuple[str, ...] = ("ray", "dask")) -> dict:
    """The embedded model's evaluation (the base and one adapter on demo rows) in this process, and through each
    cluster's path with one worker: cold (a local Ray instance or Dask cluster started for it: its start, the worker's
    start and model load, the shards' round trips) and warm (the same cluster's next evaluation, as a running cluster
    serves every one): the overhead against this process, and whether the metrics are equal."""
    from core.common.config import LoraSettings
    from core.evaluation.evaluate import evaluate_variants
    from core.evaluation.sharded import evaluate_sharded
    from core.model.loading import attach_lora, load_model
    from demos import creditmix

    rows = [Example(**r) for r in creditmix.generate(48 if quick else 240, seed=11)]
    cfg = TaskConfig()
    figures: dict = {"rows": len(rows), "variants": 2}
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = load_model(cfg.model, ModelSettings())
        attach_lora(model, LoraSettings(r=8)).save_pretrained(Path(tmp) / "adapter")  # zero LoRA B: the base's answers
        del model
        adapters = {"adapter": Path(tmp) / "adapter"}
        start = time.perf_counter()
        local = evaluate_variants(for_config(cfg, ModelSettings()), rows, adapters)
        local_s = figures["local_s"] = round(time.perf_counter() - start, 1)
        for runner in runners:
            # One worker with every core, as the local path has (Ray gives an actor as many threads as CPUs it reserves).
            cfg.scale = ScaleConfig(runner=runner, teacher_workers=1, eval_workers=1, worker_cpus=os.cpu_count() or 1)
            kind = for_config(cfg, ModelSettings())
            start = time.perf_counter()
            cluster = connect(cfg.scale, cfg.scale.eval_workers)  # cold: the cluster started for this evaluation
            sharded = evaluate_sharded(kind, rows, adapters, cluster)
            cold_s = time.perf_counter() - start
            start = time.perf_counter()  # warm: the same cluster again, as a running one serves every evaluation
            again = evaluate_sharded(kind, rows, adapters, cluster)
            warm_s = time.perf_counter() - start
            _close(cluster)
            same = all(
                answers[n]["macro_f1"] == local[n]["macro_f1"] and answers[n]["predictions"] == local[n]["predictions"]
                for n in local
                for answers in (sharded, again)
            )
            figures[runner] = {
                "cold_s": round(cold_s, 1),
                "cold_overhead_share": round(cold_s / local_s - 1, 3),
                "warm_s": round(warm_s, 1),
                "warm_overhead_share": round(warm_s / local_s - 1, 3),
                "target_overhead_le_0_10": warm_s / local_s - 1 <= 0.10,
                "metrics_equal": same,
            }
    return figures


def _close(cluster) -> None:
    """Let the next measurement have the cores: the pool's local cluster closed, and Ray's local instance (which the
    process keeps otherwise) shut down."""
    cluster.close()
    if cluster.scale.runner == "ray":
        cluster.ray.shutdown()


def run(
    quick: bool = False,
    tasks: str = "fanout,pool,ddp,eval",
    latency_s: float = 0.1,
    workers: int = 2,
    concurrency: int = 16,
    runners: str = "ray,dask",
) -> dict:
    """`tasks`: the parts to run, `fanout` (the teacher's pool on a cluster), `pool` (two tasks on a work pool), `ddp`
    (data-parallel training), `eval` (sharded evaluation's overhead); `runners`: the cluster engines the fan-out and the sharded evaluation run on."""
    parts, engines = set(tasks.split(",")), tuple(runners.split(","))
    figures = {"teacher_fanout": {r: fanout(quick, latency_s, workers, concurrency, r) for r in engines}} if "fanout" in parts else {}
    if "pool" in parts:
        figures["work_pool"] = work_pool(quick)
    if "ddp" in parts:
        figures["data_parallel_training"] = data_parallel(quick)
    if "eval" in parts:
        figures["sharded_evaluation"] = sharded_evaluation(quick, engines)
    return figures


def _start_endpoint(latency_s: float) -> tuple[multiprocessing.Process, str]:
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=_endpoint, args=(port, latency_s), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(f"{url}/asked")
            break
        except httpx.TransportError:
            time.sleep(0.1)
    return server, url


def work_pool(quick: bool, latency_s: float = 0.5, threads: int | None = None) -> dict:
    """Two tasks' retrains on a process work pool with two workers: both at once, then one after the other. `threads`:
    the torch threads each run computes on (the workers' OMP_NUM_THREADS; None: torch's default, every core)."""
    import subprocess
    import sys

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.objects import TaskRun
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from core.settings import ServiceSettings
    from deployments.distill import deploy_to_pool

    pool_inputs = 16 if quick else 60
    server, url = _start_endpoint(latency_s)
    # Four tasks of the same shape: a pair run at once, another pair one after the other (each with its own trace
    # cache, so neither arm reuses the other's teacher answers).
    names = ("alpha", "beta", "gamma", "delta")
    try:
        with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180):
            shared = Path(tmp)
            teacher = {"backend": "openai", "base_url": f"{url}/v1", "model": "remote-teacher", "api_key_env": ""}
            teacher |= {"concurrency": 1, "top_logprobs": 0, "max_pool": pool_inputs}
            configs = [
                TaskConfig.model_validate(
                    {
                        "name": name,
                        "runs_dir": str(shared / "runs"),
                        "work_dir": str(shared / "work"),
                        "methods": ["kd"],
                        "teacher": teacher,
                        "data": {"train_per_class": 8, "eval_per_class": 4, "demo": {"n_rows": 400}},
                        "training": {"max_steps": 4, "save_steps": 4, "validation_per_class": 0},
                        "promotion": {"min_gain": -1.0, "guard_min": {}},
                    }
                )
                for name in names
            ]
            with get_client(sync_client=True) as client:
                client.create_work_pool(WorkPoolCreate(name="bench", type="process"))
            deploy_to_pool(configs, "bench", settings=ServiceSettings(runs_dir=shared / "runs", audit_log=shared / "audit.jsonl"))
            env = (
                os.environ
                | {
                    "PREFECT_API_URL": PREFECT_API_URL.value(),
                    "PREFECT_WORKER_QUERY_SECONDS": "1",
                    "PREFECT_WORKER_PREFETCH_SECONDS": "1",
                    "DISTILL_SLM_MODELS_DIR": str(ModelSettings().models_dir.resolve()),
                }
                | ({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {})
            )
            command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "bench"]
            quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
            workers = [subprocess.Popen([*command, "--name", f"w{i}"], env=env, cwd=tmp, **quiet) for i in range(2)]
            try:
                spans: dict[str, list] = {}
                api = PREFECT_API_URL.value()

                def wall(tasks: tuple[str, ...]) -> float:
                    start, submitted = time.perf_counter(), time.time()
                    runs = [run_deployment(f"distill/retrain-{name}", timeout=0) for name in tasks]
                    while True:
                        with get_client(sync_client=True) as client:
                            done = [client.read_flow_run(r.id) for r in runs]
                        if all(run.state.is_final() for run in done):
                            break
                        time.sleep(0.5)
                    if not all(run.state.is_completed() for run in done):
                        raise RuntimeError(f"a retrain did not complete: {[run.state for run in done]}")
                    for name, run in zip(tasks, done):  # seconds after submission: when the run started, ended
                        span = [round(t.timestamp() - submitted, 1) for t in (run.start_time, run.end_time)]
                        # its slowest steps: where the time went (the API directly: Prefect 3.8's client sends
                        # `sort: null`, which its own server refuses)
                        found = httpx.post(f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [str(run.id)]}}}).json()
                        steps = [TaskRun.model_validate(t) for t in found]
                        slowest = sorted(steps, key=lambda t: -(t.total_run_time.total_seconds()))[:4]
                        steps_s = {t.name: round(t.total_run_time.total_seconds(), 1) for t in slowest}
                        spans.setdefault(" + ".join(tasks), []).append({name: span, "slowest_steps_s": steps_s})
                    return time.perf_counter() - start

                together = wall(names[:2])  # first: the cold start (caches, imports) counts against running side by side
                apart = [wall((name,)) for name in names[2:]]
            finally:
                for worker in workers:
                    worker.terminate()
                for worker in workers:
                    try:
                        worker.wait(timeout=30)
                    except subprocess.TimeoutExpired:  # a worker still talking to the stopping server: its runs are done
                        worker.kill()
    finally:
        server.kill()
    return {
        "teacher_latency_s": latency_s,
        "threads_per_run": threads or "torch's default",
        "pool_inputs_per_task": pool_inputs,
        "teacher_wait_s_per_task": round(pool_inputs * latency_s, 1),
        "both_at_once_s": round(together, 1),
        "one_after_the_other_s": round(sum(apart), 1),
        "each_alone_s": [round(a, 1) for a in apart],
        "ratio": round(together / sum(apart), 3),
        "run_spans_s": spans,
        "target_ratio_le_0_6": together / sum(apart) <= 0.6,
    }


def fanout(quick: bool, latency_s: float, workers: int, concurrency: int, runner: str = "ray") -> dict:
    n = 2_000 if quick else 20_000
    server, url = _start_endpoint(latency_s)
    os.environ.setdefault("RAY_worker_niceness", "0")  # a local Ray instance's workers at this process's priority
    cfg = TaskConfig()
    cfg.teacher = cfg.teacher.model_copy(
        update={"backend": "openai", "base_url": f"{url}/v1", "model": "remote-teacher", "api_key_env": "", "concurrency": concurrency}
    )
    cfg.teacher.top_logprobs = 0
    cfg.scale = ScaleConfig(runner=runner, teacher_workers=workers, shard_size=64, worker_cpus=0.5)
    ideal = workers * concurrency / latency_s
    try:
        steady = _pass(cfg, [Example(f"r{i}", f"input {i}: Interest_Rate {i % 31}") for i in range(n)], url, None, server.pid)
        killed = _pass(cfg, [Example(f"k{i}", f"killed run {i}: Num_of_Loan {i % 9}") for i in range(n // 2)], url, n // 6, server.pid)
    finally:
        server.kill()
    return {
        "latency_s": latency_s,
        "workers": workers,
        "concurrency": concurrency,
        "ideal_rate_per_s": ideal,
        "steady": steady,
        "share_of_ideal": round(steady["rate_per_s"] / ideal, 3),
        "steady_share_of_ideal": round(steady["steady_rate_per_s"] / ideal, 3),
        "with_a_worker_killed": killed,
        "target_share_ge_0_8": steady["rate_per_s"] / ideal >= 0.8,
        "target_steady_share_ge_0_8": steady["steady_rate_per_s"] / ideal >= 0.8,
        "target_none_asked_twice": steady["asked_twice"] == 0,
        "target_none_lost": killed["lost"] == 0 and steady["lost"] == 0,
        # What a kill costs by design: the shards the dead worker held are sent again, so the inputs it had already asked
        # in them (requests the endpoint received, answers that died with the worker) are asked a second time.
        "after_a_kill_asked_twice_within_the_dead_workers_shards": killed["asked_twice"] <= 2 * cfg.scale.shard_size,
        "note": "asked twice after a kill: the inputs of the shards the dead worker held (at most 2 x scale.shard_size) that it "
        "had asked before it died, sent again (Ray: to its restarted actor; Dask: to a worker)",
    }
