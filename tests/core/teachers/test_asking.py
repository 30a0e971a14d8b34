"""The endpoint half of each task kind (`core.teachers.asking`): what a worker asking an endpoint is sent. It asks and
reads exactly as the kind's whole teacher task does, and a process that unpickles it (a Ray or Dask worker) imports no
model code: no torch, transformers or grammar engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest

from core.common.config import TaskConfig
from core.common.rows import Example
from core.kinds import KINDS, for_config, teacher_loader
from core.settings import ModelSettings
from core.teachers.base import EndpointTask, TeacherAnswer, TeacherTask
from core.teachers.fanout import _TeacherWorker
from demos.invoices import generate as generate_documents

ROOT = Path(__file__).resolve().parents[3]
REPLIES = {  # per type: replies an endpoint may send, usable and not
    "classification": ["Bad", "Standard.", "Excellent!"],
    "idp": [json.dumps(generate_documents(1, seed=1)[0]["target"]), '{"total": "twelve"}', "{not json"],
    "codegen": ["Plan: add.\n```python\ndef add(a, b):\n    return a + b\n```", "```python\ndef add(a, b):\n    return a - b\n```"],
    "text": ["Your parcel ships on Monday.", ""],
}


def _endpoint_cfg(task_type: str) -> TaskConfig:
    cfg = TaskConfig(type=task_type)
    cfg.teacher = cfg.teacher.model_copy(update={"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": ""})
    return cfg


def test_every_kind_has_an_endpoint_half():
    assert set(REPLIES) == set(KINDS)


@pytest.mark.parametrize("task_type", sorted(REPLIES))
def test_the_endpoint_half_asks_and_reads_as_the_whole_teacher_task(task_type):
    kind = for_config(_endpoint_cfg(task_type), ModelSettings())
    whole = kind.teacher_task()
    half = whole.endpoint()
    assert isinstance(whole, TeacherTask) and isinstance(half, EndpointTask) and not isinstance(half, TeacherTask)
    assert half.request() == whole.request()
    assert (half.candidates, half.temperature) == (whole.candidates, whole.temperature)
    top = [[["Bad", -0.2], ["Stand", -1.9]]]
    for reply in REPLIES[task_type]:
        assert vars(half.read_reply(reply, top, 0.3, 20, 5)) == vars(whole.read_reply(reply, top, 0.3, 20, 5))
    if task_type == "codegen":  # the check runs the candidates in the sandbox: both halves keep the same one
        row = Example("r1", "add two numbers", tests="assert add(2, 3) == 5")
        answers = lambda task: task.check([row], [task.combine([TeacherAnswer(r) for r in reversed(REPLIES["codegen"])])])  # noqa: E731
        assert vars(answers(half)[0]) == vars(answers(whole)[0])
        assert answers(half)[0].output == REPLIES["codegen"][0]


@pytest.mark.parametrize("task_type", sorted(REPLIES))
def test_a_worker_asking_an_endpoint_imports_no_model_code(task_type, tmp_path):
    """What `core.teachers.fanout` sends each worker (its class, the teacher's loader, the kind's check), unpickled in a
    fresh interpreter as a Ray actor or a Dask task is: torch, transformers and xgrammar stay out."""
    cfg, settings = _endpoint_cfg(task_type), ModelSettings()
    blob = tmp_path / "worker.pickle"
    blob.write_bytes(
        cloudpickle.dumps((_TeacherWorker, teacher_loader(cfg, settings), for_config(cfg, settings).teacher_task().endpoint().check))
    )
    child = (
        "import pickle, sys; worker, load, check = pickle.loads(open(sys.argv[1], 'rb').read()); "
        "print(sorted(m for m in ('torch', 'transformers', 'xgrammar', 'peft') if m in sys.modules)); print(load.func.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", child, str(blob)], capture_output=True, text=True, cwd=ROOT, timeout=120, check=True)
    imported, loader_module = out.stdout.splitlines()
    assert imported == "[]", f"a {task_type} endpoint worker imported {imported}"
    assert loader_module == "core.teachers.openai"
