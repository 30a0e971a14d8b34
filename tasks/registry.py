"""register and promote: adapters into the registry, the alias moved only through the gate."""

from __future__ import annotations

import os
from dataclasses import asdict

import httpx
import yaml
from prefect import get_run_logger, task

from core.common.config import TaskConfig
from core.common.egress import check_endpoint
from core.errors import ConfigError, ServiceReloadFailed
from core.evaluation.evaluate import evaluate_variants
from core.kinds import for_config
from core.kinds.data import load_rows
from core.registry import Registry
from core.scorecard import model_card, registered_metrics
from core.settings import ModelSettings


@task(name="register")
def register_task(cfg: TaskConfig, method: str, adapter_dir: str, eval_dir: str, fingerprint: dict) -> str:
    """Register an adapter with its metrics (base metrics kept beside them); return 'method/version'."""
    metrics, baseline = registered_metrics(eval_dir, method)
    ref = Registry(cfg.runs_dir).register(
        cfg.name,
        method,
        adapter_dir,
        metrics,
        yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
        fingerprint,
        model_card(for_config(cfg, ModelSettings()), method, metrics, baseline),
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
        kind = for_config(cfg, ModelSettings())  # the operator's settings, on the machine this task runs on
        logger.info("evaluating production %s on this run's evaluation rows, to compare like with like", incumbent)
        scored = evaluate_variants(kind, load_rows(kind, eval_path), {"incumbent": registry.path(cfg.name, incumbent)}, include_base=False)
        incumbent_metrics = scored["incumbent"]
    decisions = registry.promote_best(cfg.name, refs, cfg.promotion, incumbent_metrics=incumbent_metrics)
    for d in decisions:
        verdict = "promoted" if d.promoted else ("passed" if d.passed else "refused")
        logger.info("gate of %s: %s (%s)", d.candidate, verdict, "; ".join(d.reasons))
    return {ref: asdict(d) | {"incumbent_reevaluated": incumbent_metrics is not None} for ref, d in zip(refs, decisions)}


@task(name="reload_service", retries=2, retry_delay_seconds=5)  # a service restarting gets a few seconds
def reload_service(cfg: TaskConfig, promoted: str) -> dict:
    """Make the running service, and each of its replicas, serve `promoted` (the new production version): POST
    /admin/reload, then check on /readyz that `<task>:production` is that version. Fails naming the replica and the
    setting to fix; nothing registered is undone."""
    link = cfg.service
    fields = {link.url: "service.url"} | {url: f"service.replicas[{i}]" for i, url in enumerate(link.replicas)}
    urls = list(fields)
    try:
        for url, field in fields.items():
            check_endpoint(url, link.admin_key_env, "service", ModelSettings(), field)  # before the key is read
    except ConfigError as exc:
        raise ServiceReloadFailed(str(exc)) from None
    key = os.environ.get(link.admin_key_env)
    if not key:
        raise ServiceReloadFailed(f"service.admin_key_env: the environment variable {link.admin_key_env} holding the admin key is not set")
    want, name = promoted, f"{cfg.name}:production"
    served = {}
    for url in urls:
        try:
            reply = httpx.post(f"{url.rstrip('/')}/admin/reload", headers={"X-API-Key": key}, timeout=link.timeout_s)
            if reply.status_code != 200:
                raise ServiceReloadFailed(f"{fields[url]} {url}: /admin/reload answered {reply.status_code}: {reply.text[:300]}")
            served[url] = httpx.get(f"{url.rstrip('/')}/readyz", timeout=30).json().get("refs", {})
        except httpx.HTTPError as exc:
            raise ServiceReloadFailed(f"{fields[url]} {url}: cannot reach the service ({type(exc).__name__}: {exc})") from exc
        if served[url].get(name) != want:
            raise ServiceReloadFailed(f"{fields[url]} {url}: after the reload it serves {name} = {served[url].get(name)!r}, not {want!r}")
        get_run_logger().info("service %s now serves %s = %s", url, name, want)
    return {"url": link.url, "served": served[link.url], "replicas": {url: served[url] for url in link.replicas}}
