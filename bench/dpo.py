"""SFT -> DPO on the creditmix demo: does preference optimisation help the SFT adapter, and at what memory?

Pairs are built on-policy from the SFT adapter's own mistakes-in-waiting (chosen = gold label,
rejected = its likeliest wrong label). Targets: DPO improves macro-F1 over the SFT adapter it
started from, or the figures say by how much it did not; no class loses more than 0.05 recall
without a flag; peak memory of the DPO run <= 1.3x that of an SFT run with the same model and batch.
Each training run is a fresh process, so its peak resident memory (ru_maxrss) is its own.

    distill-slm bench dpo --adapter runs/creditmix/sft/v0001 [--quick] [--json]
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from core.common.config import TaskConfig
from core.common.rows import Example
from core.common.splits import balanced_split
from core.evaluation.evaluate import evaluate_variants
from core.kinds import for_config
from core.kinds.data import labeled_rows
from core.settings import ModelSettings


def _split(cfg: TaskConfig) -> tuple[list[Example], list[Example]]:
    rows, _ = labeled_rows(for_config(cfg, ModelSettings()))
    return balanced_split(rows, cfg.labels, cfg.data.train_per_class, cfg.data.eval_per_class, cfg.training.seed)


def _child(kind: str, cfg_json: str, adapter: str | None, out: str) -> dict:
    """One training run in its own process; returns its figures and its peak RSS."""
    from core.model.loading import load_model
    from core.training.dpo_trainer import train_dpo
    from core.training.sft_trainer import train_sft

    cfg = TaskConfig.model_validate_json(cfg_json)
    train, _ = _split(cfg)
    figures: dict = {}
    if kind == "sft":
        _, stats = train_sft(cfg, ModelSettings(), train, Path(out) / "ck", Path(out) / "adapter", progress=False)
    else:
        task_kind = for_config(cfg, ModelSettings())  # not `kind`: that names the run (sft | dpo), and shadowing it made every run DPO
        model, tokenizer = load_model(cfg.model, ModelSettings(), adapter=adapter)
        pairs, counts = task_kind.preference_pairs(train, task_kind.decoder(model, tokenizer, adapter=adapter), None)
        del model
        figures["pairs"] = counts
        _, stats = train_dpo(cfg, ModelSettings(), pairs, Path(out) / "ck", Path(out) / "adapter", start_adapter=adapter, progress=True)
    figures |= {"steps": stats.steps, "train_s": round(stats.train_runtime_s, 1), "final_loss": stats.final_loss}
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return figures


def _in_fresh_process(*args) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_child, *args).result()


def run(quick: bool = False, adapter: str | None = None) -> dict:
    from core.evaluation.report import dpo_vs_sft

    cfg = TaskConfig()
    out = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    if quick:
        cfg.data.eval_per_class, cfg.dpo.max_pairs, cfg.training.max_steps = 6, 16, 2
    if adapter is None:
        print("no --adapter: training the SFT adapter first (the demo's 300 steps)", file=sys.stderr)
        _in_fresh_process("sft", cfg.model_dump_json(), None, str(out / "sft"))
        adapter = str(out / "sft" / "adapter")
    figures: dict = {"sft_adapter": adapter, "beta": cfg.dpo.beta, "loss_type": cfg.dpo.loss_type, "learning_rate": cfg.dpo.learning_rate}
    dpo = _in_fresh_process("dpo", cfg.model_dump_json(), adapter, str(out / "dpo"))
    memory_cfg = cfg.model_copy(deep=True)
    memory_cfg.training.max_steps = dpo["steps"] if quick else 10  # peak memory is reached in the first steps
    sft_mem = _in_fresh_process("sft", memory_cfg.model_dump_json(), None, str(out / "sft-memory"))
    figures |= {"dpo": dpo, "sft_memory_run": sft_mem}

    _, eval_rows = _split(cfg)
    results = evaluate_variants(
        for_config(cfg, ModelSettings()), eval_rows, {"sft": adapter, "dpo": out / "dpo" / "adapter"}, include_base=False
    )
    sft, dpo_m = results["sft"], results["dpo"]
    figures |= {
        "sft_macro_f1": round(sft["macro_f1"], 4),
        "dpo_macro_f1": round(dpo_m["macro_f1"], 4),
        "macro_f1_change": round(dpo_m["macro_f1"] - sft["macro_f1"], 4),
        "recall_change": {label: round(dpo_m["per_class"][label]["recall"] - sft["per_class"][label]["recall"], 4) for label in cfg.labels},
        "peak_memory_ratio_dpo_over_sft": round(dpo["peak_rss_mb"] / sft_mem["peak_rss_mb"], 3),
        "report": "\n".join(dpo_vs_sft(sft, dpo_m)),
    }
    figures["target_dpo_improves_f1"] = figures["macro_f1_change"] > 0
    figures["recall_drop_over_0.05_flagged"] = [k for k, v in figures["recall_change"].items() if v < -0.05]
    figures["target_memory_le_1.3x"] = figures["peak_memory_ratio_dpo_over_sft"] <= 1.3
    return figures
