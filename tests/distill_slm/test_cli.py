"""The command line, run as a user runs it (its own process): bad input ends in one line naming what to fix and exit
status 1, never a traceback; the registry commands read a real (tiny) registry."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.settings import ModelSettings


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill_slm.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_a_bad_task_file_stops_run_before_anything_starts_naming_file_line_and_field(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "fine", "label": "Good"}\n{"text": "no label here"}\n')
    task = tmp_path / "task.yaml"
    task.write_text(f"name: t\nlabels: [Good, Bad]\ndata: {{train: {data}}}\n")
    done = cli("run", str(task), "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "rows.jsonl:2" in done.stderr and "label" in done.stderr
    assert not (tmp_path / "runs").exists()  # nothing was trained or registered

    task.write_text("name: t\nlabels: [Good, Bad]\ntraining: {learning_rate: -1}\n")
    done = cli("run", str(task))
    assert done.returncode == 1 and "training.learning_rate" in done.stderr and "Traceback" not in done.stderr


def test_eval_and_registry_on_an_empty_registry_say_what_to_pass(tmp_path):
    done = cli("eval", "--task", "nosuch", "--data", str(tmp_path / "x.jsonl"), "--runs-dir", str(tmp_path))
    assert done.returncode == 1 and "task 'nosuch' has nothing registered" in done.stderr and "--config" in done.stderr
    done = cli("registry", "list", "--runs-dir", str(tmp_path), "--json")
    assert done.returncode == 0 and json.loads(done.stdout) in ({}, [])


@pytest.mark.parametrize("argv", [["bench"], ["registry", "nuke"], ["models", "fetch", "--from"]])
def test_usage_errors_are_argparse_errors(argv):
    done = cli(*argv)
    assert done.returncode == 2 and "usage: distill-slm" in done.stderr


def test_import_counts_tokens_as_the_base_models_tokenizer_does(embedded_dir):
    """The import's light tokenizer (the `tokenizers` library on the embedded base's tokenizer.json, no torch) counts
    exactly what the transformers tokenizer counts, and knows the same context."""
    from core.common.config import ModelConfig
    from core.model.loading import load_tokenizer
    from distill_slm.cli import base_tokens

    texts = ["Ticket 1: my invoice was charged twice", "Über 5 000 € — naïve café ☕", "", "def f(x):\n    return x ** 2"]
    count, context = base_tokens(ModelConfig(), ModelSettings())
    tokenizer = load_tokenizer(ModelConfig(), ModelSettings())
    assert count(texts) == [len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids]
    assert context == (tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else 8192)
