"""The teacher's pool on a real cluster the test starts — Ray (`ray start --head` plus a second node) and Dask (`dask
scheduler` plus two `dask worker`s), as subprocesses — answered by a real OpenAI-compatible endpoint on loopback: the
sharded traces are the unsharded ones, no input twice, and a rerun asks nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.generalize import oracle_teacher
from core.common.cluster import connect
from core.common.config import ScaleConfig, TaskConfig
from core.common.rows import Example
from core.errors import ConfigError
from core.kinds import for_config, make_teacher, teacher_loader
from core.settings import ModelSettings
from core.teachers.traces import TraceStore, generate_traces


def _task(url: str) -> TaskConfig:
    cfg = TaskConfig(labels=["approve", "review-manual", "review-legal"])
    cfg.teacher.backend, cfg.teacher.base_url, cfg.teacher.model, cfg.teacher.api_key_env = "openai", f"{url}/v1", "oracle", ""
    cfg.teacher.top_logprobs = 0
    return cfg


@pytest.mark.parametrize("runner", ["ray", "dask"])
def test_sharded_traces_equal_the_unsharded_ones_and_none_is_asked_twice(runner, request, tmp_path):
    address = request.getfixturevalue(f"{runner}_cluster")
    labels = ["approve", "review-manual", "review-legal"]
    rows = [Example(f"r{i}", f"application {i}: income {i * 37 % 1000}", labels[i % 3]) for i in range(90)]
    rows += rows[:5]  # repeated inputs are asked once
    server, url = oracle_teacher({r.text: r.label for r in rows})
    try:
        cfg = _task(url)
        cfg.scale = ScaleConfig(runner=runner, address=address, teacher_workers=2, shard_size=8)
        kind = for_config(cfg, ModelSettings())
        local_store = TraceStore(tmp_path / "local.jsonl")
        local = generate_traces(
            rows, local_store, lambda: make_teacher(cfg, ModelSettings()), progress=False, check=kind.teacher_task().check
        )
        ray_store = TraceStore(tmp_path / "ray.jsonl")
        # as the flow sends them: the workers get the endpoint half alone (`teacher_loader`), the local run the whole kind's
        fanned = generate_traces(
            rows,
            ray_store,
            teacher_loader(cfg, ModelSettings()),
            progress=False,
            check=kind.teacher_task().endpoint().check,
            cluster=connect(cfg.scale),
        )
        assert fanned["asked"] == local["asked"] == 90 and fanned["duplicates_skipped"] == 5 and fanned["failed"] == 0
        assert fanned["teacher"] == local["teacher"]
        answers = lambda store: {k: (t["output"], t["prompt"]) for k, t in store.traces.items()}  # noqa: E731
        assert answers(ray_store) == answers(local_store)
        ray_store.close()
        lines = [json.loads(line)["input_sha256"] for line in Path(tmp_path / "ray.jsonl").read_text().splitlines()]
        assert len(lines) == len(set(lines)) == 90  # one writer, one line per input

        again = TraceStore(tmp_path / "ray.jsonl")
        rerun = generate_traces(
            rows, again, lambda: pytest.fail("a cached rerun loads no teacher"), progress=False, cluster=connect(cfg.scale)
        )
        assert rerun["asked"] == 0 and rerun["cached"] == 90
        again.close()
        local_store.close()
    finally:
        server.should_exit = True


@pytest.mark.parametrize("runner, address", [("ray", "127.0.0.1:1"), ("dask", "tcp://127.0.0.1:1")])
def test_an_address_nothing_answers_fails_before_any_work_naming_the_setting(runner, address):
    with pytest.raises(ConfigError, match=r"scale.address: nothing answers at '127.0.0.1:1'"):
        connect(ScaleConfig(runner=runner, address=address))
