"""bench.generalize_parallel: the queue runs real `bench.generalize` processes, bounded, and packs what they wrote."""

import json
import tarfile
from pathlib import Path

from bench.generalize_parallel import CANDIDATES, KD_STEPS, default_jobs, kd_steps_jobs, run_jobs
from bench.generators import DEVELOPMENT, HELD_OUT


def test_held_out_defaults_first_then_every_candidate_on_every_development_task() -> None:
    jobs = default_jobs()
    held = [kwargs for name, kwargs in jobs if name.startswith("held-")]
    assert [name for name, _ in jobs[: len(held)]] == [f"held-{k['tasks']}" for k in held]  # first in the queue
    assert all("training" not in kwargs for kwargs in held)  # held-out runs defaults only: never a candidate
    assert {k["tasks"] for k in held} == {n for n, d in HELD_OUT.items() if d.type == "classification"}
    development = [n for n, d in DEVELOPMENT.items() if d.type == "classification"]
    assert len(jobs) - len(held) == len(CANDIDATES) * len(development)
    assert all(kwargs["tasks"] in DEVELOPMENT for name, kwargs in jobs if name.startswith("dev-"))


def test_kd_steps_runs_the_development_half_first_and_the_held_out_half_only_with_the_candidate() -> None:
    jobs = kd_steps_jobs()
    development = [n for n, d in DEVELOPMENT.items() if d.type == "classification"]
    first = jobs[: len(development) * (1 + len(KD_STEPS))]
    assert all(kwargs["tasks"] in DEVELOPMENT and kwargs["variants"] == "kd_strong" for _, kwargs in first)
    assert sorted(kwargs.get("kd", {}).get("min_steps", 0) for _, kwargs in first) == sorted([0, *KD_STEPS] * len(development))
    held = jobs[len(first) :]
    assert all(kwargs["tasks"] in HELD_OUT and kwargs["kd"]["min_steps"] in KD_STEPS for _, kwargs in held)
    assert len({name for name, _ in jobs}) == len(jobs)


def test_a_failing_job_is_reported_and_the_results_packed(tmp_path: Path) -> None:
    state = run_jobs([("dev-nosuchtask", {"tasks": "nosuchtask"})], parallel=1, deadline_s=120, results=tmp_path / "r", out=tmp_path / "o")
    assert state["done"]["dev-nosuchtask"]["rc"] != 0 and not state["killed"]
    assert "unknown generators" in (tmp_path / "r" / "dev-nosuchtask.log").read_text()
    with tarfile.open(tmp_path / "o" / "results.tgz") as tar:
        packed = json.load(tar.extractfile("results/jobs.json"))
    assert packed == json.loads(json.dumps(state))


def test_the_deadline_kills_what_is_still_running(tmp_path: Path) -> None:
    state = run_jobs([("held-claims", {"tasks": "claims"})], parallel=1, deadline_s=1, results=tmp_path / "r", out=tmp_path / "o")
    assert state["killed"] == ["held-claims"] and not state["done"]
