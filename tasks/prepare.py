"""prepare_data: load (or generate) the task's data, refuse bad rows, write balanced splits."""

from __future__ import annotations

import hashlib
import json

from prefect import get_run_logger, task

from core import creditmix, invoices
from core.config import TaskConfig
from core.data import DataError, Example, balance, labeled_rows, load_rows, split_rows, to_record, write_jsonl
from core.teacher import preflight


def _fingerprint(rows: list[Example]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()


@task(name="prepare_data")
def prepare_data(cfg: TaskConfig) -> dict:
    """Write `train.jsonl` and `eval.jsonl` under the work dir; return their paths and fingerprints."""
    logger = get_run_logger()
    if cfg.type == "idp":
        schema = cfg.task_schema()  # an unusable schema stops the run here, naming the pointer
        if schema.unenforced:
            logger.warning("the grammar cannot enforce %s; outputs are validated after decoding instead", ", ".join(schema.unenforced))
    rows, source = labeled_rows(cfg)
    if cfg.data.eval is not None:
        eval_rows = load_rows(cfg, cfg.data.eval)
        if cfg.type == "idp":
            train_rows = rows[: cfg.data.train_per_class]
        else:
            train_rows = balance(rows, cfg.labels, cfg.data.train_per_class, cfg.training.seed)
    else:
        train_rows, eval_rows = split_rows(cfg, rows)
    out = cfg.work_dir / cfg.name / "data"
    write_jsonl(out / "train.jsonl", [to_record(cfg, r) for r in train_rows])
    write_jsonl(out / "eval.jsonl", [to_record(cfg, r) for r in eval_rows])
    paths = {"train": str(out / "train.jsonl"), "eval": str(out / "eval.jsonl")}
    if "kd" in cfg.methods:
        preflight(cfg)  # a missing key or a dead endpoint fails here, not an hour into the run
        pool = unlabeled_pool(cfg)
        write_jsonl(out / "unlabeled.jsonl", [to_record(cfg, r) for r in pool])
        paths["unlabeled"] = str(out / "unlabeled.jsonl")
        logger.info("unlabeled pool for the teacher: %d rows", len(pool))
    fingerprint = {
        "source": source,
        "train_sha256": _fingerprint(train_rows),
        "eval_sha256": _fingerprint(eval_rows),
        "n_train": len(train_rows),
        "n_eval": len(eval_rows),
    }
    logger.info("prepared %d training rows and %d eval rows from %s", len(train_rows), len(eval_rows), source)
    return paths | {"fingerprint": fingerprint}


def unlabeled_pool(cfg: TaskConfig) -> list[Example]:
    """The inputs the teacher labels: `data.unlabeled`, or (demo) fresh generator rows with their labels dropped."""
    limit = cfg.teacher.max_pool
    if cfg.data.unlabeled is not None:
        rows = load_rows(cfg, cfg.data.unlabeled, require_answers=False)
    elif cfg.data.train is None and cfg.demo_generator() == "invoices":
        demo = cfg.data.demo
        rows = [Example(r["id"].replace("inv-", "pool-"), r["document"]) for r in invoices.generate(limit or demo.n_rows, seed=demo.seed + 1)]
    elif cfg.data.train is None:
        demo = cfg.data.demo
        rows = [Example(r["id"].replace("cm-", "pool-"), r["text"]) for r in creditmix.generate(limit or demo.n_rows, seed=demo.seed + 1)]
    else:
        raise DataError("<config>", None, "data.unlabeled", "method 'kd' needs an unlabeled pool for the teacher")
    return rows[:limit] if limit else rows
