"""Generalisation: what the default recipe makes of tasks nobody tuned it to (`bench/generators/`).

Per generator, as a new user with default settings would have it: a labeled file of ~120 rows per
class (the generator's own class shares, so imbalanced tasks stay imbalanced; extraction: 240
documents), an unlabeled pool of 1,500 inputs, no eval file. The product splits the file itself
(`TaskKind.splits`: its eval and validation splits come out of those rows). Every variant is then
scored on fresh rows of a seed no split saw (balanced, up to 60 per class; extraction: 60 documents):

* base: the embedded base model, zero-shot through the task's decoder;
* sft: the default recipe on the labeled rows;
* selftrain (classification): SFT again on the labeled rows plus the SFT adapter's confident answers
  on the pool, zero-shot as it is served (the flow also tries the slower deliberate labeler);
* kd_strong: KD on the pool from a strong teacher, served over the OpenAI-compatible API, that knows
  the generator's labels (it stands in for a large model and measures what KD can reach; no gold
  label of the labeled file is used);
* promoted: the variant the product would promote: the best on its own eval split, unless its lead over SFT there is
  within the draw of the rows (a paired bootstrap, `core.evaluation.paired`), then SFT.

Printed per generator (primary metric with its bootstrap interval, worst class recall, training
seconds) and, over the half, mean and worst of each variant. Defaults may be chosen on the
`development` half only; the `held-out` half is measured, never tuned on.

    distill-slm bench generalize [--tasks held-out|development|NAME,NAME] [--quick] [--json]
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from scipy.stats import t as t_dist

from bench.generators import DEVELOPMENT, GENERATORS, HELD_OUT
from bench.timing import timed
from core.common.config import KDConfig, ModelConfig, TaskConfig, TrainingConfig
from core.common.files import atomic_write_text
from core.common.splits import balanced_split, distinct_inputs
from core.evaluation.evaluate import evaluate_variants
from core.evaluation.paired import paired_gains, within_noise
from core.kinds import for_config, make_teacher
from core.kinds.data import rows_from_records, splits
from core.methods import kd as kd_method
from core.methods import selftrain
from core.methods import sft as sft_method
from core.methods.base import validator
from core.methods.selftrain import labeler_config
from core.settings import ModelSettings
from core.teachers.traces import TraceStore, generate_traces
from core.training.sft_trainer import train_sft
from core.training.validation import best_point, stops_here
from demos import Demo
from service.main import serve_app_in_thread

HALVES = {"held-out": HELD_OUT, "development": DEVELOPMENT}


def oracle_teacher(answers: dict[str, str]) -> tuple[uvicorn.Server, str]:
    """An OpenAI-compatible chat endpoint on loopback that answers each input with its gold answer (`answers`: input text
    -> answer text): the strong teacher of this benchmark."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> dict:
        body = await request.json()
        text = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        content = answers.get(text, "")
        return {
            "id": "oracle",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "oracle"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(text.split()), "completion_tokens": 1, "total_tokens": len(text.split()) + 1},
        }

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "oracle", "object": "model", "owned_by": "bench"}]}

    @app.get("/readyz")
    async def ready() -> dict:
        return {"ready": True}

    return serve_app_in_thread(app)


def _config(demo: Demo, work: Path) -> TaskConfig:
    if demo.type == "classification":
        return TaskConfig(name=demo.name, type="classification", labels=demo.labels, instruction=demo.instruction, work_dir=work)
    schema = work / "schema.json"
    schema.write_text(json.dumps(demo.schema))
    return TaskConfig(name=demo.name, type=demo.type, schema_file=schema, instruction=demo.instruction, work_dir=work)


def _answer_text(demo: Demo, record: dict) -> str:
    return record["label"] if demo.type == "classification" else json.dumps(record["target"])


def _figures(metrics: dict, primary: str) -> dict:
    out = {primary: round(metrics[primary], 4)}
    if "macro_f1_ci" in metrics:
        out["ci"] = metrics["macro_f1_ci"]
    if "min_class_recall" in metrics:
        out["min_class_recall"] = round(metrics["min_class_recall"], 4)
    return out


def _merged(base: dict, changes: dict) -> dict:
    return {
        key: _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        for key, value in changes.items()
    } | {key: value for key, value in base.items() if key not in changes}


def _generator(
    demo: Demo,
    per_class: int,
    pool_size: int,
    test_per_class: int,
    quick: bool,
    variants: tuple[str, ...],
    training: dict | None = None,
    model: dict | None = None,
    kd: dict | None = None,
) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"bench-generalize-{demo.name}-"))
    cfg = _config(demo, work)
    if training:  # a candidate default, measured on the development half before it becomes one
        cfg.training = TrainingConfig.model_validate(_merged(cfg.training.model_dump(), training))
    if model:  # another base model, e.g. {"base_model": "gemma3-270m"}
        cfg.model = ModelConfig.model_validate(_merged(cfg.model.model_dump(), model))
    if kd:
        cfg.kd = KDConfig.model_validate(_merged(cfg.kd.model_dump(), kd))
    if "selftrain" in variants:  # as a task file whose pool runs self-training: it holds out validation rows for its threshold
        cfg.methods = ["sft", "selftrain"]
    if quick:
        cfg.training.max_steps = 4
        cfg.training.validation_per_class = 2 if demo.type == "classification" else 0
    kind = for_config(cfg, ModelSettings())
    primary = cfg.promotion.primary_metric
    n_classes = len(demo.labels) if demo.labels else 2
    labeled = rows_from_records(kind, demo.generate(per_class * n_classes, 1), f"<{demo.name} labeled file>")
    fresh = rows_from_records(kind, demo.generate(test_per_class * n_classes * 6, 3), f"<{demo.name} fresh rows>")
    if demo.labels:
        _, test_rows = balanced_split(fresh, cfg.labels, 0, test_per_class, 0)
    else:  # constrained decoding costs seconds a document on a CPU: fewer, and said in the figures
        test_rows = fresh[: max(4, test_per_class // 2)]
    pool_records = demo.generate(pool_size, 2)
    gold_answers = {r.get("text") or r.get("document"): _answer_text(demo, r) for r in pool_records}
    raw_pool = rows_from_records(kind, demo.pool(pool_size, 2), f"<{demo.name} pool>", require_answers=False)
    train, validation, eval_rows = splits(kind, labeled)
    pool, _ = distinct_inputs(raw_pool, validation + eval_rows)

    adapters, seconds, sft_stats = {}, {}, None
    if "sft_stopping" in variants:
        (sft_stats, stopping), seconds["sft"] = timed(lambda: _stopping_arms(cfg, train, validation, work))
        adapters |= stopping
    elif "sft" in variants:
        (adapters["sft"], sft_stats), seconds["sft"] = timed(
            lambda: sft_method.train(cfg, ModelSettings(), train, validation, work / "sft-ck", work / "sft")
        )
    if demo.type == "classification" and validation and "selftrain" in variants:
        labeler = make_teacher(labeler_config(cfg, zero_shot=True), ModelSettings(), train, adapter=adapters["sft"])
        stores = {split: TraceStore(work / f"labeler-{split}.jsonl") for split in ("validation", "pool")}
        for split, rows in (("validation", validation), ("pool", pool)):
            generate_traces(rows, stores[split], lambda: labeler, progress=False)
            stores[split].close()
        del labeler
        added, choice = selftrain.select(
            cfg, ModelSettings(), validation, stores["validation"].traces, list(stores["pool"].traces.values())
        )
        (adapters["selftrain"], _), seconds["selftrain"] = timed(
            lambda: selftrain.train(cfg, ModelSettings(), train, added, validation, work / "st-ck", work / "st", report=choice)
        )
    if "kd_strong" in variants:
        server, url = oracle_teacher(gold_answers)
        try:
            oracle_cfg = cfg.model_copy(
                update={
                    "teacher": cfg.teacher.model_copy(
                        update={
                            "backend": "openai",
                            "base_url": url + "/v1",
                            "model": "oracle",
                            "api_key_env": "",
                            "concurrency": 8,
                            "top_logprobs": 0,
                        }
                    )
                }
            )
            store = TraceStore(work / "oracle-pool.jsonl")
            teacher = make_teacher(oracle_cfg, ModelSettings())
            generate_traces(pool, store, lambda: teacher, progress=False)
            store.close()
        finally:
            server.should_exit = True
        (kd_result, seconds["kd_strong"]) = timed(
            lambda: kd_method.train(cfg, ModelSettings(), store.usable(), work / "kd-ck", work / "kd", progress=True)
        )
        adapters["kd_strong"] = kd_result[0]

    on_eval = evaluate_variants(kind, eval_rows, adapters, include_base=False)
    paired_gains(kind, eval_rows, on_eval, list(adapters))
    promoted = max(on_eval, key=lambda name: on_eval[name][primary])
    if within_noise(on_eval[promoted]):  # as the gate: a lead over SFT within the draw of the eval rows keeps SFT
        promoted = on_eval[promoted]["paired"]["reference"]
    on_test = evaluate_variants(kind, test_rows, adapters)
    variants = {
        name: _figures(metrics, primary) | ({"train_s": seconds[name]} if name in seconds else {}) for name, metrics in on_test.items()
    }
    variants["promoted"] = dict(variants[promoted], variant=promoted)
    for name, metrics in on_eval.items():  # the eval split's verdict beside the fresh rows' figures
        if metrics.get("paired"):
            variants[name]["paired_on_eval"] = metrics["paired"]
    return {
        "type": demo.type,
        "primary_metric": primary,
        "rows": {"labeled": len(labeled), "trained": len({r.id for r in train}), "validation": len(validation), "eval": len(eval_rows)},
        "test_rows": len(test_rows),
        "pool": len(pool),
        "variants": variants,
    } | _curves(sft_stats, work / "kd-ck" / "validation.json")


def _kept_by_rule(curve: list[dict], patience: int, not_before: int) -> int:
    """The step `BestOnValidation` keeps on `curve` (its stopping rule replayed): the best so far when it would stop."""
    for end in range(1, len(curve) + 1):
        if stops_here(curve[:end], patience, not_before):
            return best_point(curve[:end])["step"]
    return best_point(curve)["step"]


def _stopping_arms(cfg: TaskConfig, train: list, validation: list, work: Path) -> tuple:
    """One SFT run through the whole plan, its adapter saved at every validation; three stopping rules read off it:
    `sft` what the default rule keeps (early stop on `training.patience`), `sft_full_best` the best validation step of
    the whole plan, `sft_full_last` the last step. The trajectory up to an early stop is the same in all three (the
    schedule is planned for the whole run either way), so one run measures them all."""
    saved: list[Path] = []
    score = validator(cfg, ModelSettings(), validation)

    def validate_and_keep(model) -> float:
        folder = work / "sft-steps" / str(len(saved))
        model.save_pretrained(str(folder), selected_adapters=["default"])
        saved.append(folder)
        return score(model)

    full = cfg.model_copy(update={"training": cfg.training.model_copy(update={"patience": 10**6})})
    _, stats = train_sft(full, ModelSettings(), train, work / "sft-ck", work / "sft", validate=validate_and_keep)
    by_step = {point["step"]: folder for point, folder in zip(stats.learning_curve, saved, strict=True)}
    kept = _kept_by_rule(stats.learning_curve, cfg.training.patience, stats.planned_steps // 2)
    best = best_point(stats.learning_curve)["step"]
    stats.best_step = kept
    arms = {"sft": by_step[kept], "sft_full_best": by_step[best], "sft_full_last": by_step[stats.learning_curve[-1]["step"]]}
    return stats, arms


def _curves(sft_stats, kd_validation: Path) -> dict:
    """Steps run, planned and kept, and the validation curves: what a recipe change is judged on besides the test rows."""
    out = {}
    if sft_stats is not None:
        out["sft_steps"] = [sft_stats.steps, sft_stats.planned_steps, sft_stats.best_step]
        out["sft_validation_curve"] = [[point["step"], round(point["value"], 3)] for point in sft_stats.learning_curve]
        out["sft_validation_s"] = round(sum(point.get("seconds", 0.0) for point in sft_stats.learning_curve), 1)
    if kd_validation.exists():
        curve = json.loads(kd_validation.read_text())["curve"]
        out["kd_validation_curve"] = [[p["step"], round(p["value"], 3)] for p in curve]
        out["kd_validation_s"] = round(sum(p.get("seconds", 0.0) for p in curve), 1)
    return out


def _summary(per_task: dict) -> dict:
    """Mean (with a t-interval over the generators) and worst of each variant's primary metric."""
    variants = sorted({v for task in per_task.values() for v in task["variants"]})
    out = {}
    for variant in variants:
        values = [task["variants"][variant][task["primary_metric"]] for task in per_task.values() if variant in task["variants"]]
        mean = float(np.mean(values))
        n = len(values)  # a few generators: Student's t quantile, not the normal's 2 (t at 3 tasks is 4.3)
        half = float(t_dist.ppf(0.975, n - 1)) * float(np.std(values, ddof=1)) / math.sqrt(n) if n > 1 else None  # one task: none
        out[variant] = {
            "mean": round(mean, 4),
            "mean_ci": None if half is None else [round(max(0.0, mean - half), 4), round(min(1.0, mean + half), 4)],  # a score
            "worst": round(min(values), 4),
            "tasks": len(values),
        }
    return out


def run(
    quick: bool = False,
    tasks: str = "held-out",
    variants: str = "sft,selftrain,kd_strong",
    training: dict | None = None,
    model: dict | None = None,
    out: Path | None = None,
    kd: dict | None = None,
) -> dict:
    """`variants`: the trained variants to run (base always runs, sft whenever selftrain does; fewer is a partial
    measurement, said in the figures; `sft_stopping`: SFT's stopping rules compared on one run, `_stopping_arms`). `kd`: changes to the `kd` section (e.g. `{"epochs": 5}`).
    `training`: changes to the task file's `training` section (a candidate default, e.g. `{"lora": {"dropout": 0.1}}`);
    tune on the development half only. `model`: changes to the `model` section (another base: `{"base_model":
    "gemma3-270m"}`). `out`: a JSON file rewritten after each generator (a long run keeps what it did)."""
    names = list(HALVES[tasks]) if tasks in HALVES else tasks.split(",")
    unknown = [n for n in names if n not in GENERATORS]
    if unknown:
        raise SystemExit(f"unknown generators {unknown}; choose from {sorted(GENERATORS)} or a half: {sorted(HALVES)}")
    per_class, pool_size, test_per_class = (12, 24, 4) if quick else (120, 1500, 60)
    chosen = tuple(set(variants.split(",")) | ({"sft"} if "selftrain" in variants else set()))
    per_task = {}
    for name in names:
        per_task[name] = _generator(GENERATORS[name], per_class, pool_size, test_per_class, quick, chosen, training, model, kd)
        result = {
            "tasks": tasks,
            "variants": sorted(chosen),
            "training": training or {},
            "model": model or {},
            "kd": kd or {},
            "per_task": per_task,
            "summary": _summary(per_task),
        }
        if out is not None:
            atomic_write_text(Path(out), json.dumps(result, indent=1))
    return result
