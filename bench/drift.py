"""Drift detection: false alarms on in-distribution nights, detection on shifted ones, and the cost of a night.

Figures: over `nights` seeded nights of `requests` requests each, drawn from the demo generator
(creditmix) as trained and shifted at three strengths (`demos.creditmix.SHIFTS`: weak = a
distractor's range moved; medium = the population moved; strong = another layout and vocabulary),
how many nights each verdict (`drift`) fires; then the wall time and peak traced memory of one
check over 10,000 audit records, beside the same check with 5x as many older records in the log
(memory must not grow with the log's size).
Targets: false alarms <= 1 of 20; detection at medium >= 19 of 20; 10,000 records in <= 120 s.

The production adapter answers every request, as the service would, through the task kind's
decoder. By default it is a LoRA over the 2-layer tiny model built from the embedded config (its
answers are near-random but deterministic; the input signals do not depend on the model at all):
4 x 20 nights of 500 requests through SmolLM2-135M would take hours on 2 CPU cores. With
`--runs-dir runs` (after `make demo`) it is the demo's production adapter, copied first (then use
`--quick`: 3 nights per condition). Teacher calls are left out (teacher_sample 0).

    distill-slm bench drift [--quick] [--runs-dir runs] [--tasks nights,scale,loop] [--json]
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from pathlib import Path

import torch
import yaml

from core.common.config import TaskConfig
from core.drift.sources import load_reference, sentence_embedder
from core.drift.verdict import assess
from core.drift.windows import Window
from core.kinds import for_config
from core.kinds.data import reference_rows
from core.model.loading import activate_adapter, load_model
from core.registry import Registry
from core.serving.audit import AuditLog, iter_audit
from core.settings import ModelSettings
from demos import creditmix

TASK = "creditmix"


def write_traffic(
    audit: AuditLog, cfg: TaskConfig, decoder, ref: str, texts: list[str], at: float, answers: list[dict] | None = None
) -> None:
    """Audit records of the production adapter answering `texts` (or the `answers` it gave them), as the service writes
    them, one second apart from `at`."""
    answers = answers or for_config(cfg, ModelSettings()).reference_answers(decoder, texts)
    for i, (text, answer) in enumerate(zip(texts, answers)):
        record = {"at": at + i, "route": "infer", "caller": "bench", "input": text, "task": cfg.name, "variant": "auto"}
        audit.write(record | answer | {"adapter": ref, "tier": "student", "request_id": uuid.uuid4().hex})


def tiny_registry(root: Path, seed: int = 0) -> Path:
    """A registry with a production LoRA over a 2-layer model made from the embedded config (fast, untrained)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from core.model.loading import fetch_embedded_model

    embedded = fetch_embedded_model(ModelSettings().models_dir)
    config = AutoConfig.from_pretrained(embedded)
    config.update(
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    )
    torch.manual_seed(seed)
    model_dir = root / "tiny-model"
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(embedded).save_pretrained(model_dir)
    cfg = TaskConfig()
    cfg.model.base_model = str(model_dir)
    model, _ = load_model(cfg.model, ModelSettings())
    peft = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    for name, param in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    peft.save_pretrained(root / "adapter")
    registry = Registry(root / "runs")
    ref = registry.register(
        TASK, "sft", root / "adapter", {"macro_f1": 0.5, "accuracy": 0.5, "n": 180}, yaml.safe_dump(cfg.model_dump(mode="json")), {}
    )
    registry.promote(TASK, ref, cfg.promotion.model_copy(update={"guard_min": {}}))
    return root / "runs"


def _night(cfg, kind, reference, decoder, ref, embed, audit_path: Path, texts: list[str], seed: int) -> dict:
    audit_path.unlink(missing_ok=True)
    log = AuditLog(audit_path)
    write_traffic(log, cfg, decoder, ref, texts, at=1_000_000.0)
    log.close()
    window = Window(TASK, ref, lambda r: kind.drift_view(r), cfg.drift.sample_size, seed=seed)
    for record in iter_audit(audit_path):
        window.observe(record)
    return assess(cfg, kind, reference, window, embed, seed=seed)


def run(
    quick: bool = False, runs_dir: str | None = None, nights: int | None = None, requests: int = 500, tasks: str = "nights,scale,loop"
) -> dict:
    """`tasks`: the parts to run, of `nights` (false alarms and detection), `scale` (10,000 records) and `loop` (drift
    verdict -> retrain -> the service serving it, timed per step); default all."""
    parts = set(tasks.split(","))
    nights = nights or (3 if quick else 20)
    work = Path(tempfile.mkdtemp(prefix="bench-drift-"))
    if runs_dir and Registry(runs_dir).aliases(TASK).get("production"):
        source = Path(runs_dir) / TASK
        shutil.copytree(source, work / "runs" / TASK)
        model_note = "the demo's production adapter (embedded SmolLM2-135M)"
    else:
        tiny_registry(work)
        model_note = "an untrained LoRA over the 2-layer tiny model (the input signals do not depend on it)"
    registry = Registry(work / "runs")
    ref = registry.aliases(TASK)["production"]
    cfg = registry.task_config(TASK, ref)
    cfg.drift.teacher_sample = 0
    kind = for_config(cfg, ModelSettings())
    start = time.perf_counter()
    reference = load_reference(cfg, kind, registry, TASK, ref, work / "drift", lambda: reference_rows(kind))
    reference_s = time.perf_counter() - start
    model, tokenizer = load_model(cfg.model, ModelSettings())
    model = activate_adapter(model, registry.path(TASK, ref), name="production")
    decoder = kind.decoder(model, tokenizer, registry.path(TASK, ref))
    embed = sentence_embedder()

    figures: dict = {"student": model_note, "nights": nights, "requests_per_night": requests, "reference_build_s": round(reference_s, 1)}
    for condition in (None, "weak", "medium", "strong") if "nights" in parts else ():
        verdicts, fired = Counter(), Counter()
        for night in range(nights):
            seed = 10_000 + night * 7 + (0 if condition is None else 1000 * (1 + list(creditmix.SHIFTS).index(condition)))
            texts = [r["text"] for r in creditmix.generate(requests, seed, shift=condition)]
            report = _night(cfg, kind, reference, decoder, ref, embed, work / "audit.jsonl", texts, night)
            verdicts[report["verdict"]] += 1
            for s in report["signals"]:
                if s.get("p_corrected", 1.0) < cfg.drift.p_drift:
                    fired[s["name"]] += 1
        name = condition or "in_distribution"
        figures[f"{name}_drift_nights"] = f"{verdicts['drift']} of {nights}"
        figures[f"{name}_warn_nights"] = f"{verdicts['warn']} of {nights}"
        figures[f"{name}_signals_that_fired"] = dict(fired)
        print(f"{name}: {dict(verdicts)} {dict(fired)}", flush=True)
    if "scale" in parts:
        figures |= _scale(cfg, kind, reference, decoder, ref, embed, work)
        print(f"scale: { {k: v for k, v in figures.items() if k.startswith('log_') or k.startswith('peak')} }", flush=True)
    if "loop" in parts:
        figures |= _loop(Path(tempfile.mkdtemp(prefix="bench-loop-")))
    shutil.rmtree(work, ignore_errors=True)
    return figures


def _loop(work: Path) -> dict:
    """A drift night on the tiny model's registry, then the retrain it asks for (SFT + KD on the drifted inputs, 30
    steps each), gate, promotion and the reload of a running service: wall time from the verdict to the service
    answering with the new version, and each step's share (Prefect's task-run times)."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    from core.settings import ServiceSettings
    from flows.distill import distill
    from flows.drift import nightly_drift
    from flows.server import run_server
    from service.main import serve_in_thread

    runs = tiny_registry(work)
    registry = Registry(runs)
    before = registry.aliases(TASK)["production"]
    cfg = registry.task_config(TASK, before)
    cfg.runs_dir, cfg.work_dir = runs, work / "work"
    cfg.drift.teacher_sample = 0
    cfg.methods, cfg.teacher.max_pool = ["sft", "kd"], 60
    cfg.training.max_steps, cfg.training.validation_per_class = 30, 0
    cfg.promotion.min_gain, cfg.promotion.guard_min = -1.0, {}  # an untrained tiny model: the loop's mechanics are measured
    key = "bench-loop-key"
    settings = ServiceSettings(runs_dir=runs, admin_api_keys=[key], audit_log=work / "audit.jsonl")
    srv, url = serve_in_thread(settings)
    cfg.service.url = url
    os.environ["DISTILL_SLM_ADMIN_KEY"] = key
    model, tokenizer = load_model(cfg.model, ModelSettings())
    model = activate_adapter(model, registry.path(TASK, before), name="production")
    log = AuditLog(settings.audit_log)
    texts = [r["text"] for r in creditmix.generate(300, 4242, shift="strong")]
    write_traffic(
        log, cfg, for_config(cfg, ModelSettings()).decoder(model, tokenizer, registry.path(TASK, before)), before, texts, time.time() - 600
    )
    log.close()
    try:
        with run_server():
            night = nightly_drift(str(runs), str(settings.audit_log))[TASK]
            verdict_at = time.perf_counter()
            state = distill(cfg, extra_pool=night["inputs"], return_state=True)
            while httpx.get(url + "/readyz").json()["refs"].get(f"{TASK}:production") == before:
                time.sleep(0.1)
            total = time.perf_counter() - verdict_at
            with get_client(sync_client=True) as client:
                runs_of = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])),
                    limit=200,
                    sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                )
            steps = Counter()
            for task_run in runs_of:
                steps[task_run.name.rsplit("-", 1)[0]] += task_run.total_run_time.total_seconds()
    finally:
        srv.should_exit = True
    figures = {"loop_verdict": night["verdict"], "loop_verdict_to_served_s": round(total, 1)}
    figures["loop_step_seconds"] = {name: round(seconds, 1) for name, seconds in steps.most_common()}
    figures["loop_step_share"] = {name: round(seconds / total, 3) for name, seconds in steps.most_common()}
    figures["loop_other_s"] = round(total - sum(steps.values()), 1)  # flow and task orchestration, model loading between tasks
    return figures


def _scale(cfg, kind, reference, decoder, ref, embed, work: Path) -> dict:
    """One check over a window of 10,000 records, with nothing older in the log, then with 50,000 older records."""
    texts = [r["text"] for r in creditmix.generate(500, 99)]
    answers = kind.reference_answers(decoder, texts)
    path = work / "scale" / "audit.jsonl"
    log = AuditLog(path, max_bytes=5_000_000)
    figures = {}
    for label, older in (("log_10k", 0), ("log_60k", 50_000)):
        for i in range(older // 500):
            write_traffic(log, cfg, decoder, ref, texts, 1_000.0 + i * 500, answers)
        for i in range(20):
            write_traffic(log, cfg, decoder, ref, texts, 10_000_000.0 + i * 500, answers)
        tracemalloc.start()
        start = time.perf_counter()
        window = Window(TASK, ref, lambda r: kind.drift_view(r), cfg.drift.sample_size)
        for record in iter_audit(path, since=10_000_000.0):
            window.observe(record)
        report = assess(cfg, kind, reference, window, embed)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        figures[f"{label}_window_records"] = window.requests
        figures[f"{label}_check_s"] = round(seconds, 1)
        figures[f"{label}_peak_traced_mb"] = round(peak / 1e6, 1)
        figures[f"{label}_verdict"] = report["verdict"]
        path.parent.joinpath("audit.jsonl").unlink()
        for rotated in path.parent.glob("audit.jsonl.*"):
            rotated.unlink()
    figures["peak_memory_ratio_60k_vs_10k_log"] = round(figures["log_60k_peak_traced_mb"] / figures["log_10k_peak_traced_mb"], 2)
    log.close()
    return figures
