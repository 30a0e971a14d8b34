"""`bench generalize` jobs side by side: a bounded queue of processes, each one `bench.generalize.run` for one task and
one candidate, its figures written as it goes. Made for a machine with a GPU and many cores, where one 135M-parameter
student leaves the GPU mostly idle and ten train at once (on one H200 ten jobs ran in 8 minutes what takes ~9 hours
one after another on the 2-core CPU); on a small CPU run `bench generalize` itself, one task at a time.

The jobs, in priority order:

* the held-out half with defaults and the pool (SFT on the labeled rows, KD from the label-knowing teacher): the
  promoted figure, measured, never compared across candidates;
* development-half candidates for the SFT recipe (labeled rows only): `CANDIDATES`, changes to the task file's
  `training` section. A candidate becomes a default only if it wins on the development half (and then on the
  held-out half, measured once); defaults are never chosen on held-out figures.

`--plan kd-steps` runs the next question instead: KD's plan length (`kd.min_steps`) on every development
classification task, the default beside each candidate of `KD_STEPS`, then the held-out half with the candidate: its
figures are read only if the candidate won on the development half. Why: on `loans` the 1,250-step plan's validation
curve was at its highest when the plan ended, yet 2,000 steps scored lower there (0.590 against 0.648, one run each on
a 2-core CPU, 2026-12-04; `core/training/recipe.py`); one run on one task is within KD's spread, four tasks tell more.

    python -m bench.generalize_parallel --parallel 10 --deadline 480 --results /tmp/results --out $OUT
    python -m bench.generalize_parallel --plan kd-steps --parallel 12 --deadline 540 --out $OUT

`--out` gets `results.tgz` (every job's JSON and log, refreshed every 20 s, so a run cut short at `--deadline` keeps
what finished); jobs still running at the deadline are killed and listed in `jobs.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from bench.generators import DEVELOPMENT, HELD_OUT

CANDIDATES: dict[str, dict] = {
    "default": {},
    "steps1000": {"min_steps": 1000, "max_epochs": 16},
    "lr1e-3": {"learning_rate": 1e-3},
    "r64": {"lora": {"r": 64, "alpha": 128}},
    "top20": {"lora": {"top_layers": 20}},
}


def default_jobs() -> list[tuple[str, dict]]:
    """(name, keyword arguments of `bench.generalize.run`), held-out defaults first, then each candidate on each
    development classification task."""
    held = [name for name, demo in HELD_OUT.items() if demo.type == "classification"]
    development = [name for name, demo in DEVELOPMENT.items() if demo.type == "classification"]
    jobs = [(f"held-{task}", {"tasks": task, "variants": "sft,kd_strong"}) for task in held]
    return jobs + [
        (f"dev-{task}-{name}", {"tasks": task, "variants": "sft", "training": changes})
        for name, changes in CANDIDATES.items()
        for task in development
    ]


# KD's plan lengths to compare with the default (kd.min_steps 1,250): optimizer steps, capped at training.max_epochs passes.
KD_STEPS = (2000,)


def kd_steps_jobs() -> list[tuple[str, dict]]:
    """KD's default plan and each of `KD_STEPS` on every development classification task, then the held-out half with
    each candidate (measured once; read only where the development half prefers the candidate)."""
    development = [name for name, demo in DEVELOPMENT.items() if demo.type == "classification"]
    held = [name for name, demo in HELD_OUT.items() if demo.type == "classification"]
    jobs = [
        (f"dev-{task}-kd{steps or 'default'}", {"tasks": task, "variants": "kd_strong"} | ({"kd": {"min_steps": steps}} if steps else {}))
        for task in development
        for steps in (None, *KD_STEPS)
    ]
    return jobs + [
        (f"held-{task}-kd{steps}", {"tasks": task, "variants": "kd_strong", "kd": {"min_steps": steps}})
        for steps in KD_STEPS
        for task in held
    ]


PLANS = {"held-out": default_jobs, "kd-steps": kd_steps_jobs}


def _start(name: str, kwargs: dict, results: Path, quick: bool) -> subprocess.Popen:
    code = (
        "import json\nfrom pathlib import Path\nfrom bench.generalize import run\n"
        f"if __name__ == '__main__':\n    run(quick={quick}, out=Path({str(results / f'{name}.json')!r}), **json.loads({json.dumps(kwargs)!r}))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1")  # the GPU works; one core each
    with open(results / f"{name}.log", "w") as log:
        return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT, env=env)


def _pack(results: Path, out: Path) -> None:
    partial = out / "results.tgz.partial"
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(results, arcname="results")
    os.replace(partial, out / "results.tgz")


def run_jobs(jobs: list[tuple[str, dict]], parallel: int, deadline_s: float, results: Path, out: Path, quick: bool = False) -> dict:
    """Run `jobs` at most `parallel` at a time until all finish or `deadline_s` passes; returns what finished, was
    killed at the deadline or never started."""
    results.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    queued, running, done = list(jobs), {}, {}
    start, packed = time.time(), 0.0
    while (queued or running) and time.time() - start < deadline_s:
        while queued and len(running) < parallel:
            name, kwargs = queued.pop(0)
            running[name] = (_start(name, kwargs, results, quick), time.time())
            print(f"{time.time() - start:6.0f}s start {name}", flush=True)
        for name, (process, began) in list(running.items()):
            if process.poll() is not None:
                done[name] = {"rc": process.returncode, "s": round(time.time() - began, 1)}
                print(f"{time.time() - start:6.0f}s done  {name} rc={process.returncode} in {done[name]['s']} s", flush=True)
                del running[name]
        if time.time() - packed > 20:
            (results / "jobs.json").write_text(json.dumps({"done": done, "running": list(running), "queued": [n for n, _ in queued]}))
            _pack(results, out)
            packed = time.time()
        time.sleep(2)
    for process, _ in running.values():
        process.kill()
    state = {"done": done, "killed": list(running), "queued": [n for n, _ in queued]}
    (results / "jobs.json").write_text(json.dumps(state))
    _pack(results, out)
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parallel", type=int, default=10)
    parser.add_argument("--deadline", type=float, default=480.0, help="seconds; jobs still running then are killed")
    parser.add_argument("--results", type=Path, default=Path("runs/.bench/generalize-parallel"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/.bench/generalize-parallel-out")))
    parser.add_argument("--quick", action="store_true", help="tiny data and 4 steps: checks the plumbing")
    parser.add_argument("--plan", choices=sorted(PLANS), default="held-out", help="which jobs (see the module's docstring)")
    args = parser.parse_args()
    state = run_jobs(PLANS[args.plan](), args.parallel, args.deadline, args.results, args.out, args.quick)
    print(json.dumps(state, indent=1))


if __name__ == "__main__":
    main()
