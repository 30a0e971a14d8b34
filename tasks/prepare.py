"""prepare_data: load (or generate) the task's data, refuse bad rows, write balanced splits."""

from __future__ import annotations

import hashlib
import json

from prefect import get_run_logger, task

from core import creditmix
from core.config import TaskConfig
from core.data import Example, balance, balanced_split, load_classification, write_jsonl


def _fingerprint(rows: list[Example]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()


@task(name="prepare_data")
def prepare_data(cfg: TaskConfig) -> dict:
    """Write `train.jsonl` and `eval.jsonl` under the work dir; return their paths and fingerprints."""
    logger = get_run_logger()
    if cfg.data.train is None:
        demo = cfg.data.demo
        rows = [Example(**r) for r in creditmix.generate(demo.n_rows, seed=demo.seed)]
        source = f"creditmix generator (n={demo.n_rows}, seed={demo.seed})"
    else:
        rows = load_classification(cfg.data.train, cfg.labels)
        source = str(cfg.data.train)
    if cfg.data.eval is not None:
        eval_rows = load_classification(cfg.data.eval, cfg.labels)
        train_rows = balance(rows, cfg.labels, cfg.data.train_per_class, cfg.training.seed)
    else:
        train_rows, eval_rows = balanced_split(
            rows, cfg.labels, cfg.data.train_per_class, cfg.data.eval_per_class, cfg.training.seed
        )
    out = cfg.work_dir / cfg.name / "data"
    write_jsonl(out / "train.jsonl", [r.to_dict() for r in train_rows])
    write_jsonl(out / "eval.jsonl", [r.to_dict() for r in eval_rows])
    fingerprint = {
        "source": source,
        "train_sha256": _fingerprint(train_rows),
        "eval_sha256": _fingerprint(eval_rows),
        "n_train": len(train_rows),
        "n_eval": len(eval_rows),
    }
    logger.info("prepared %d training rows and %d eval rows from %s", len(train_rows), len(eval_rows), source)
    return {"train": str(out / "train.jsonl"), "eval": str(out / "eval.jsonl"), "fingerprint": fingerprint}
