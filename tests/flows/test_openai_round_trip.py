"""The round trip a team leaving OpenAI makes: its chat fine-tuning file -> `distill-slm import openai` -> the real
`distill` flow (Prefect server, the tiny model) -> the service -> the official `openai` client, unchanged but for its
base URL, calling the old fine-tuned model name."""

import json
import subprocess
import sys

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
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill_slm.cli",
            "import",
            "openai",
            str(tmp_path / "train.jsonl"),
            "--name",
            "refunds",
            "--out",
            str(tmp_path / "task"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "classification, 3 labels" in done.stdout

    cfg = TaskConfig.from_yaml(tmp_path / "task" / "task.yaml")  # as written, then pointed at the tiny model for speed
    cfg.model.base_model = str(tiny_model_dir)
    cfg.runs_dir, cfg.work_dir = tmp_path / "runs", tmp_path / "work"
    cfg.data.train_per_class, cfg.data.eval_per_class = 8, 4
    cfg.training.batch_size, cfg.training.save_steps, cfg.training.max_steps = 4, 2, 3
    cfg.training.validation_per_class = 0  # 12 rows per class: too few to hold validation rows out as well
    cfg.promotion.guard_min = {}  # a 2-layer random model cannot clear real guards
    summary = distill(cfg)
    assert summary["variants"]["sft"]["promotion"]["passed"]

    settings = ServiceSettings(runs_dir=cfg.runs_dir, audit_log=tmp_path / "audit.jsonl", model_names={OLD_NAME: "refunds:production"})
    server, url = serve_in_thread(settings)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused-on-loopback")
        ask = [{"role": "user", "content": "Hi, money back please (order 7)"}]
        reply = client.chat.completions.create(model=OLD_NAME, messages=ask)
        assert reply.model == OLD_NAME and reply.choices[0].message.content in WORDS
        streamed = list(client.chat.completions.create(model=OLD_NAME, messages=ask, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == reply.choices[0].message.content
    finally:
        server.should_exit = True
