"""prepare_data: load (or generate) the task's data, refuse bad rows, write the splits."""

from __future__ import annotations

from prefect import get_run_logger, task

from core.common.config import TaskConfig
from core.common.egress import check_endpoint
from core.common.files import write_jsonl
from core.common.rows import rows_fingerprint
from core.kinds import for_config
from core.kinds.data import labeled_rows, load_rows, splits, unlabeled_pool
from core.methods import check as check_methods
from core.settings import ModelSettings
from core.teachers.backends import preflight


def check_egress(cfg: TaskConfig, settings: ModelSettings) -> None:
    """The hosts this run would send keys to and the variables it would read them from, against the operator's lists."""
    if cfg.teacher.backend == "openai":
        check_endpoint(cfg.teacher.base_url, cfg.teacher.api_key_env, "teacher", settings)
    if cfg.service.url:
        check_endpoint(cfg.service.url, cfg.service.admin_key_env, "service", settings)


def check_inputs(cfg: TaskConfig, settings: ModelSettings) -> None:
    """Every check that needs no Prefect: the task (and its methods), the labeled rows, the eval file, the pool and the teacher's
    endpoint. The CLI runs it before the flow starts, so bad input stops a run in seconds, not after a server boots."""
    kind = for_config(cfg, settings)
    check_egress(cfg, settings)
    kind.check_task()
    check_methods(cfg)
    labeled_rows(kind)
    if cfg.data.eval is not None:
        load_rows(kind, cfg.data.eval)
    if cfg.data.unlabeled is not None and cfg.uses_pool():
        load_rows(kind, cfg.data.unlabeled, require_answers=False)
    if "kd" in cfg.methods:
        preflight(cfg, settings)


@task(name="prepare_data")
def prepare_data(cfg: TaskConfig, extra_pool: str | None = None) -> dict:
    """Write `train.jsonl`, `validation.jsonl` and `eval.jsonl` (and the teacher's `unlabeled.jsonl`) under the work dir;
    return their paths and fingerprints. `extra_pool`: inputs (a drift window's) the teacher answers first."""
    logger = get_run_logger()
    settings = ModelSettings()  # the operator's, on the machine this task runs on
    kind = for_config(cfg, settings)
    check_egress(cfg, settings)  # a run started from the UI's form skips the CLI's check_inputs
    for warning in kind.check_task():
        logger.warning(warning)
    check_methods(cfg)
    rows, source = labeled_rows(kind)
    given_eval = load_rows(kind, cfg.data.eval) if cfg.data.eval is not None else None
    train_rows, validation_rows, eval_rows = splits(kind, rows, given_eval)
    out = cfg.work_dir / cfg.name / "data"
    paths = {}
    for split, split_rows in (("train", train_rows), ("validation", validation_rows), ("eval", eval_rows)):
        write_jsonl(out / f"{split}.jsonl", [kind.to_record(r) for r in split_rows])
        paths[split] = str(out / f"{split}.jsonl")
    pool_counts = None
    if cfg.uses_pool():
        if "kd" in cfg.methods:
            preflight(cfg, settings)  # a missing key or a dead endpoint fails here, not an hour into the run
        first = load_rows(kind, extra_pool, require_answers=False) if extra_pool else None
        pool, pool_counts = unlabeled_pool(kind, validation_rows + eval_rows, first)
        write_jsonl(out / "unlabeled.jsonl", [kind.to_record(r) for r in pool])
        paths["unlabeled"] = str(out / "unlabeled.jsonl")
        logger.info(
            "unlabeled pool for the teacher: %d rows (of %d: %d repeated inputs and %d validation/eval inputs dropped)",
            len(pool),
            pool_counts["rows"],
            pool_counts["duplicates_dropped"],
            pool_counts["held_out_inputs_dropped"],
        )
    elif extra_pool:
        logger.warning("extra_pool %s is not used: methods %s ask no teacher (add kd or selftrain)", extra_pool, cfg.methods)
    fingerprint = {
        "source": source,
        "train_sha256": rows_fingerprint(train_rows),
        "eval_sha256": rows_fingerprint(eval_rows),
        "validation_sha256": rows_fingerprint(validation_rows),
        "n_train": len(train_rows),
        "n_validation": len(validation_rows),
        "n_eval": len(eval_rows),
    }
    logger.info(
        "prepared %d training, %d validation and %d eval rows from %s", len(train_rows), len(validation_rows), len(eval_rows), source
    )
    return paths | {"fingerprint": fingerprint, "pool": pool_counts}
