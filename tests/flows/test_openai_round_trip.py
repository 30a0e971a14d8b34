"""The round trip a team leaving OpenAI makes: its chat fine-tuning file -> `distill-slm import openai` -> the real
`distill` flow (Prefect server, the tiny model) -> the service -> the official `openai` client, unchanged but for its
base URL, calling the old fine-tuned model name."""

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai

from core.common.config import TaskConfig
from core.settings import ServiceSettings
from flows.distill import distill
from service.main import serve_in_thread

OLD_NAME = "ft:gpt-4o-mini-2024-07-18:acme::refunds7"
WORDS = {
    "refund": ["money back", "refund me", "charged twice"],
    "shipping": ["where is my parcel", "late delivery", "tracking"],
    "account": ["password reset", "cannot log in", "change email"],
}


def test_an_openai_fine_tuning_file_is_served_under_its_old_model_name(prefect_server, tiny_model_dir, tmp_path):
    lines = []
    for label, phrases in WORDS.items():
        for i in range(12):
            conversation = [
                {"role": "system", "content": "Route the customer message to refund, shipping or account."},
                {"role": "user", "content": f"Hi, {phrases[i % 3]} please (order {100 + i})"},
                {"role": "assistant", "content": label},
            ]
            lines.append(json.dumps({"messages": conversation}))
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    stdout = _imported(tmp_path / "train.jsonl", "refunds", tmp_path / "task")
    assert "classification, 3 labels" in stdout

    cfg = TaskConfig.from_yaml(tmp_path / "task" / "task.yaml")  # as written, then pointed at the tiny model for speed
    cfg.model.base_model = str(tiny_model_dir)
    cfg.runs_dir, cfg.work_dir = tmp_path / "runs", tmp_path / "work"
    cfg.data.train_per_class, cfg.data.eval_per_class = 8, 4
    cfg.training.batch_size, cfg.training.save_steps, cfg.training.max_steps = 4, 2, 3
    cfg.training.validation_per_class = 0  # 12 rows per class: too few to hold validation rows out as well
    cfg.promotion.guard_min = {}  # a 2-layer random model cannot clear real guards
    summary = distill(cfg)
    assert summary["variants"]["sft"]["promotion"]["passed"]

    with _client(cfg, OLD_NAME, tmp_path) as client:
        ask = [{"role": "user", "content": "Hi, money back please (order 7)"}]
        reply = client.chat.completions.create(model=OLD_NAME, messages=ask)
        assert reply.model == OLD_NAME and reply.choices[0].message.content in WORDS
        streamed = list(client.chat.completions.create(model=OLD_NAME, messages=ask, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == reply.choices[0].message.content


def _imported(path: Path, name: str, out: Path, *options: str) -> str:
    """`distill-slm import openai` as a user runs it; its printed report."""
    command = [sys.executable, "-m", "distill_slm.cli", "import", "openai", str(path), "--name", name, "--out", str(out), *options]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextmanager
def _client(cfg: TaskConfig, old_name: str, tmp_path: Path) -> Iterator[openai.OpenAI]:
    """The official client of a real service over the run's registry, `old_name` mapped to the task's production."""
    settings = ServiceSettings(runs_dir=cfg.runs_dir, audit_log=tmp_path / "audit.jsonl", model_names={old_name: f"{cfg.name}:production"})
    server, url = serve_in_thread(settings)
    try:
        yield openai.OpenAI(base_url=url + "/v1", api_key="unused-on-loopback")
    finally:
        server.should_exit = True


TOY = Path(__file__).parents[1] / "data" / "openai" / "toy_chat_fine_tuning.jsonl"  # OpenAI cookbook's example file
TOY_NAME = "ft:gpt-3.5-turbo-0613:acme::positive1"


def test_the_cookbook_chat_file_imports_trains_and_is_served_under_its_old_model_name(prefect_server, tiny_model_dir, tmp_path):
    """The cookbook's own file (free-text replies, one bad line of five), as published: imported as `type: text`,
    trained, and answered through the official client under the old name, streamed and not."""
    stdout = _imported(TOY, "positive", tmp_path / "task", "--max-bad-share", "0.25")
    assert "free-text replies" in stdout and f"{TOY}:4:" in stdout

    cfg = TaskConfig.from_yaml(tmp_path / "task" / "task.yaml")
    assert cfg.type == "text"
    cfg.model.base_model = str(tiny_model_dir)
    cfg.runs_dir, cfg.work_dir = tmp_path / "runs", tmp_path / "work"
    cfg.max_new_tokens = 12
    cfg.data.eval_fraction = 0.25  # four usable rows: one to evaluate on (at the default 0.2 the split asks for five)
    cfg.training.batch_size, cfg.training.save_steps, cfg.training.max_steps = 2, 1, 1  # its 8,000-token row costs seconds a step
    summary = distill(cfg)
    assert summary["variants"]["sft"]["promotion"]["promoted"] and "chrf" in summary["variants"]["sft"]

    with _client(cfg, TOY_NAME, tmp_path) as client:
        ask = [{"role": "user", "content": "I lost my keys today."}]
        reply = client.chat.completions.create(model=TOY_NAME, messages=ask)
        assert reply.model == TOY_NAME and reply.choices[0].message.content and reply.usage.completion_tokens > 0
        streamed = list(client.chat.completions.create(model=TOY_NAME, messages=ask, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == reply.choices[0].message.content
        assert sum(1 for c in streamed if c.choices and c.choices[0].delta.content) > 1  # sent as decoded, not whole
