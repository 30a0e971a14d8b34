"""Document extraction on the invoices demo: the constrained base model vs its students.

Every variant decodes under the task's JSON Schema (XGrammar). SFT trains on the gold JSON of the
training documents; KD on a `deliberate` teacher's constrained answers for an unlabeled pool (no
gold); DPO starts from the SFT adapter with valid-but-wrong pairs. KD and DPO get small budgets
here (a 64-document pool, 2 shots and one vote for the teacher; 64 pairs): they show the paths
and their schema validity, not their best quality. Targets: 100% schema-valid outputs from every
variant, and a student field-level F1 >= 0.90 that is >= 0.25 above the constrained base model.

    distill-slm bench idp [--quick] [--json]

Adapters and traces are cached under runs/.bench/idp/: a second run only evaluates.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from core.common.config import TaskConfig
from core.common.rows import Example
from core.evaluation.cost import add_cost
from core.evaluation.evaluate import evaluate_variants
from core.evaluation.report import EXTRACTION_HEADLINE
from core.kinds import for_config, make_teacher
from core.kinds.data import labeled_rows, split
from core.methods import kd as kd_method
from core.model.loading import load_model
from core.settings import ModelSettings
from core.teachers.traces import TraceStore, generate_traces
from core.training.dpo_trainer import train_dpo
from core.training.sft_trainer import train_sft
from demos import invoices

KEYS = (*EXTRACTION_HEADLINE, "completion_tokens_per_request")


def run(quick: bool = False) -> dict:
    cfg = TaskConfig(type="idp")
    work = Path("runs/.bench") / ("idp-quick" if quick else "idp")
    if quick:
        cfg.data.train_per_class, cfg.data.eval_per_class, cfg.training.max_steps = 16, 4, 2
    kind = for_config(cfg, ModelSettings())
    rows, source = labeled_rows(kind)
    train_rows, eval_rows = split(kind, rows)
    adapter = work / "sft-adapter"
    figures: dict = {"source": source, "train_documents": len(train_rows), "eval_documents": len(eval_rows)}
    if not (adapter / "train_stats.json").exists():
        start = time.perf_counter()
        _, stats = train_sft(cfg, ModelSettings(), train_rows, work / "sft-checkpoints", adapter)
        (adapter / "train_stats.json").write_text(json.dumps(asdict(stats)))
        print(f"SFT: {stats.steps} steps in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    figures["sft_training"] = json.loads((adapter / "train_stats.json").read_text())
    adapters = {"sft": adapter}
    cfg.teacher.k_shot, cfg.teacher.votes = 2, 1
    pool = [Example(r["id"], r["document"]) for r in invoices.generate(8 if quick else 64, seed=cfg.data.demo.seed + 1)]
    teacher_cache: list = []

    def teacher():
        if not teacher_cache:
            teacher_cache.append(make_teacher(cfg, ModelSettings(), train_rows))
        return teacher_cache[0]

    stores = {split: TraceStore(work / f"traces-{split}.jsonl") for split in ("pool", "eval")}
    figures["teacher_pool_traces"] = generate_traces(pool, stores["pool"], teacher)
    generate_traces(eval_rows, stores["eval"], teacher)
    teacher_cache.clear()
    kd_adapter = work / "kd-adapter"
    if not (kd_adapter / "adapter_config.json").exists():
        kd_method.train(cfg, ModelSettings(), stores["pool"].usable(), work / "kd-checkpoints", kd_adapter)
    adapters["kd"] = kd_adapter
    dpo_adapter = work / "dpo-adapter"
    if not (dpo_adapter / "adapter_config.json").exists():
        model, tokenizer = load_model(cfg.model, ModelSettings(), adapter=adapter)
        cfg.dpo.max_pairs = 8 if quick else 64
        pairs, counts = kind.preference_pairs(train_rows, kind.decoder(model, tokenizer), None)
        (work / "dpo-pairs.json").write_text(json.dumps(counts))
        del model
        train_dpo(cfg, ModelSettings(), pairs, work / "dpo-checkpoints", dpo_adapter, start_adapter=adapter)
    adapters["dpo"] = dpo_adapter
    figures["dpo_pairs"] = json.loads((work / "dpo-pairs.json").read_text())
    results = evaluate_variants(kind, eval_rows, adapters)
    results["teacher"] = kind.teacher_metrics(eval_rows, stores["eval"].traces)
    for metrics in results.values():
        add_cost(metrics, cfg)
    figures["report"] = str(kind.write_report(results, work / "eval"))
    for name, metrics in results.items():
        figures[name] = {k: round(metrics[k], 4) for k in KEYS if k in metrics}
        figures[name]["field_accuracy"] = metrics["field_accuracy"]
    base, sft = results["base"], results["sft"]
    figures["sft_gain_over_base"] = round(sft["field_f1"] - base["field_f1"], 4)
    figures["target_all_valid"] = all(m["schema_valid_rate"] == 1.0 for name, m in results.items() if name != "teacher")
    figures["target_student_f1_ge_0.90"] = sft["field_f1"] >= 0.90
    figures["target_gain_ge_0.25"] = figures["sft_gain_over_base"] >= 0.25
    return figures
