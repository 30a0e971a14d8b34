"""register and promote: adapters into the registry, the alias moved only through the gate."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import httpx
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from prefect import get_run_logger, task

from core.common.config import TaskConfig
from core.common.egress import check_endpoint
from core.errors import ConfigError, ServiceReloadFailed
from core.kinds import kind_of
from core.registry import Registry

HUB_IDS = {"embedded": "HuggingFaceTB/SmolLM2-135M-Instruct"}  # what the embedded base is on the Hugging Face Hub
LICENSES = {"embedded": "apache-2.0"}  # an adapter is published under its base model's license; others: say so by hand


def model_card(cfg: TaskConfig, method: str, metrics: dict, baseline: dict | None) -> str:
    """A Hugging Face model card (YAML metadata + text): the adapter folder can be pushed to the Hub as it is."""
    kind = kind_of(cfg)
    base = cfg.model.base_model
    data = ModelCardData(
        base_model=HUB_IDS.get(base, base),
        library_name="peft",
        license=LICENSES.get(base, "other"),
        tags=["distill-slm", "lora", kind.type, method],
        model_name=f"{cfg.name}-{method}",
        eval_results=[
            EvalResult(
                task_type=kind.hf_task,
                dataset_type=cfg.name,
                dataset_name=f"{cfg.name} evaluation split ({metrics.get('n', '?')} rows)",
                metric_type=key,
                metric_value=round(float(metrics[key]), 4),
            )
            for key in kind.card_keys
            if key in metrics
        ],
    )
    lines = [
        f"# {cfg.name} / {method}",
        "",
        f"LoRA adapter ({method}) over `{data.base_model}` ({cfg.model.precision}, quantization {cfg.model.quantization}), "
        "trained by distill-slm.",
        kind.card_line(cfg),
        "",
        "| metric | adapter | base |",
        "|---|---|---|",
    ]
    for key in kind.card_keys:
        base_value = f"{baseline[key]:.3f}" if baseline and key in baseline else "-"
        lines.append(f"| {key} | {metrics[key]:.3f} | {base_value} |")
    if data.license == "other":
        lines += ["", f"License: that of the base model `{base}`; set `license` in the metadata before publishing."]
    return str(ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(lines) + "\n"))


def agreement(student: list[dict], teacher: list[dict]) -> float:
    """Share of rows where the student's answer (`pred`, or an extraction's `output`) is the teacher's."""
    answer = lambda p: p.get("pred", p.get("output"))  # noqa: E731
    theirs = {p["id"]: answer(p) for p in teacher}
    return sum(answer(p) == theirs.get(p["id"]) for p in student) / max(len(student), 1)


@task(name="register")
def register_task(cfg: TaskConfig, method: str, adapter_dir: str, eval_dir: str, fingerprint: dict) -> str:
    """Register an adapter with its metrics (base metrics kept beside them); return 'method/version'."""
    metrics = json.loads((Path(eval_dir) / f"{method}.metrics.json").read_text())
    base_path = Path(eval_dir) / "base.metrics.json"
    baseline = json.loads(base_path.read_text()) if base_path.exists() else None
    teacher_path = Path(eval_dir) / "teacher.metrics.json"
    if teacher_path.exists():  # what drift compares a night's student-teacher agreement with
        metrics["teacher_agreement"] = agreement(metrics["predictions"], json.loads(teacher_path.read_text())["predictions"])
    metrics.pop("predictions", None)
    if baseline:
        metrics["baseline"] = {k: v for k, v in baseline.items() if k != "predictions"}
    ref = Registry(cfg.runs_dir).register(
        cfg.name,
        method,
        adapter_dir,
        metrics,
        yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
        fingerprint,
        model_card(cfg, method, metrics, baseline),
    )
    get_run_logger().info("registered %s/%s", cfg.name, ref)
    return ref


@task(name="promote")
def promote_task(cfg: TaskConfig, refs: list[str], eval_path: str | None = None) -> dict[str, dict]:
    """Gate one run's adapters and move `production` at most once, to the best that passes; both sides are compared on
    the same rows: an incumbent evaluated on other rows is evaluated again on `eval_path` (the candidates' rows)."""
    logger = get_run_logger()
    registry = Registry(cfg.runs_dir)
    incumbent = registry.aliases(cfg.name).get("production")
    rows_of = lambda r: registry.fingerprint(cfg.name, r).get("eval_sha256")  # noqa: E731
    incumbent_metrics = None
    if incumbent and eval_path and any(incumbent != registry.resolve(cfg.name, r) and rows_of(incumbent) != rows_of(r) for r in refs):
        kind = kind_of(cfg)
        logger.info("evaluating production %s on this run's evaluation rows, to compare like with like", incumbent)
        scored = kind.evaluate(cfg, kind.load_rows(cfg, eval_path), {"incumbent": registry.path(cfg.name, incumbent)}, include_base=False)
        incumbent_metrics = scored["incumbent"]
    decisions = registry.promote_best(cfg.name, refs, cfg.promotion, incumbent_metrics=incumbent_metrics)
    for d in decisions:
        verdict = "promoted" if d.promoted else ("passed" if d.passed else "refused")
        logger.info("gate of %s: %s (%s)", d.candidate, verdict, "; ".join(d.reasons))
    return {ref: asdict(d) | {"incumbent_reevaluated": incumbent_metrics is not None} for ref, d in zip(refs, decisions)}


@task(name="reload_service", retries=2, retry_delay_seconds=5)  # a service restarting gets a few seconds
def reload_service(cfg: TaskConfig, promoted: str) -> dict:
    """Make the running service serve `promoted` (the new production version): POST /admin/reload, then check on
    /readyz that `<task>:production` is that version. Fails naming the setting to fix; nothing registered is undone."""
    link = cfg.service
    try:
        check_endpoint(link.url, link.admin_key_env, "service")  # before the key is read
    except ConfigError as exc:
        raise ServiceReloadFailed(str(exc)) from None
    key = os.environ.get(link.admin_key_env)
    if not key:
        raise ServiceReloadFailed(f"service.admin_key_env: the environment variable {link.admin_key_env} holding the admin key is not set")
    want, name = promoted, f"{cfg.name}:production"
    try:
        reply = httpx.post(f"{link.url.rstrip('/')}/admin/reload", headers={"X-API-Key": key}, timeout=link.timeout_s)
        if reply.status_code != 200:
            raise ServiceReloadFailed(f"service.url {link.url}: /admin/reload answered {reply.status_code}: {reply.text[:300]}")
        served = httpx.get(f"{link.url.rstrip('/')}/readyz", timeout=30).json().get("refs", {})
    except httpx.HTTPError as exc:
        raise ServiceReloadFailed(f"service.url {link.url}: cannot reach the service ({type(exc).__name__}: {exc})") from exc
    if served.get(name) != want:
        raise ServiceReloadFailed(f"service.url {link.url}: after the reload it serves {name} = {served.get(name)!r}, not {want!r}")
    get_run_logger().info("service %s now serves %s = %s", link.url, name, want)
    return {"url": link.url, "served": served}
