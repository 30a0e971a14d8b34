"""What one run's adapters are worth: each variant scored on the same rows with its cost, the teacher and the cascade
beside them, the report, and the model card each registered adapter carries. Shared by the flow (`tasks/evaluate.py`,
`tasks/registry.py`), the CLI (`distill-slm eval`) and the benchmarks, so all of them report the same figures.

    kind = for_config(cfg, ModelSettings())
    results = score_variants(kind, rows, {"sft": "runs/.../adapter"})         # metrics + cost per 1k answers
    card = evaluate_run(kind, rows, adapters, "runs/.work/task/eval-…", teacher_traces)
    text = model_card(kind, "sft", metrics, baseline)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from core.common.cluster import connect
from core.common.openai_evals import answer_text, load_openai_eval
from core.common.rows import Example
from core.evaluation.cost import add_cost, price_for
from core.evaluation.evaluate import cascade_table, evaluate_variants
from core.evaluation.paired import paired_gains
from core.evaluation.report import add_learning_curves, add_openai_graders, add_paired_gains
from core.evaluation.sharded import evaluate_sharded
from core.kinds import TaskKind
from core.kinds.data import label_set
from core.teachers.openai import OpenAITeacher

HUB_IDS = {"embedded": "HuggingFaceTB/SmolLM2-135M-Instruct"}  # what the embedded base is on the Hugging Face Hub
LICENSES = {"embedded": "apache-2.0"}  # an adapter is published under its base model's license; others: say so by hand


@dataclass
class Scorecard:
    results: dict[str, dict]  # variant -> metrics (base, teacher when traced, then the adapters)
    out_dir: Path  # `<variant>.metrics.json` and the report
    report: Path
    curves: dict[str, dict | None]  # adapter -> its validation curve (`learning_curve.json`), None without one


def score_variants(
    kind: TaskKind,
    rows: list[Example],
    adapters: dict[str, str | Path],
    include_base: bool = True,
    teacher_traces: dict[str, dict] | None = None,
) -> dict[str, dict]:
    """Each variant's metrics on `rows`, with its tokens and cost per 1k answers; with `teacher_traces` (the teacher's
    answers to the same rows, keyed by input hash) the teacher's row too and, where answers carry a confidence, each
    adapter's cascade (student first, the teacher under a confidence threshold)."""
    cfg = kind.cfg
    if cfg.scale.runner != "local":  # the rows decoded in shards on the cluster's workers, merged exactly
        cluster = connect(cfg.scale, cfg.scale.eval_workers)
        try:
            results = evaluate_sharded(kind, rows, adapters, cluster, include_base=include_base)
        finally:
            cluster.close()
    else:
        results = evaluate_variants(kind, rows, adapters, include_base=include_base)
    for metrics in results.values():
        add_cost(metrics, cfg)
    if teacher_traces is None:
        return results
    teacher = kind.teacher_metrics(rows, teacher_traces)
    add_cost(teacher, cfg, price_for(teacher["teacher"], cfg.teacher.prices))
    if kind.escalates:
        for name in adapters:
            results[name]["cascade"] = cascade_table(cfg, results[name], teacher)
    base = {"base": results.pop("base")} if "base" in results else {}
    return base | {"teacher": teacher} | results


def _grading_model(kind: TaskKind):
    """The teacher endpoint that grades an imported eval's `label_model` graders (None without an `openai` teacher)."""
    return OpenAITeacher(kind.cfg, kind.settings) if kind.cfg.teacher.backend == "openai" else None


def evaluate_run(
    kind: TaskKind,
    rows: list[Example],
    adapters: dict[str, str | Path],
    out_dir: str | Path,
    teacher_traces: dict[str, dict] | None = None,
) -> Scorecard:
    """`score_variants`, plus what each adapter's folder says about its training (rows learned from, self-training's
    choice, the validation curve); written as `<out_dir>/<variant>.metrics.json` and the task kind's report."""
    cfg = kind.cfg
    results = score_variants(kind, rows, adapters, teacher_traces=teacher_traces)
    paired_gains(kind, rows, results, list(adapters))  # what the gate reads before letting a variant displace SFT
    for name, folder in adapters.items():
        stats = Path(folder) / "train_stats.json"
        if stats.exists():  # the report says how many rows each adapter learned from
            results[name]["training_rows"] = json.loads(stats.read_text()).get("distinct_rows")
        chosen = Path(folder) / "self_training.json"
        if chosen.exists():  # what the labeler added, for the report's self-training section
            results[name]["self_training"] = json.loads(chosen.read_text())
    openai_eval = load_openai_eval(cfg.data.openai_eval) if cfg.data.openai_eval is not None else None
    if openai_eval is not None:  # the user's own graders, on the same answers
        grader = _grading_model(kind) if openai_eval.needs_model() else None
        try:
            for metrics in results.values():
                if metrics.get("predictions"):
                    answers = {p["id"]: answer_text(p) for p in metrics["predictions"]}
                    metrics["openai_graders"] = openai_eval.grade(answers, grader.chat if grader else None, cfg.teacher.concurrency)
        finally:
            if grader is not None:
                grader.close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, metrics in results.items():
        (out / f"{name}.metrics.json").write_text(json.dumps(metrics, indent=2))
    report = kind.write_report(results, out)
    curves = {name: _curve(Path(folder)) for name, folder in adapters.items()}
    add_learning_curves(report, curves)
    add_paired_gains(report, results)
    if openai_eval is not None:
        add_openai_graders(report, results, openai_eval.unsupported)
    return Scorecard(results, out, report, curves)


def _curve(adapter_dir: Path) -> dict | None:
    path = adapter_dir / "learning_curve.json"
    return json.loads(path.read_text()) if path.exists() else None


def agreement(student: list[dict], teacher: list[dict]) -> float:
    """Share of rows where the student's answer (`pred`, or an extraction's `output`) is the teacher's."""
    answer = lambda p: p.get("pred", p.get("output"))  # noqa: E731
    theirs = {p["id"]: answer(p) for p in teacher}
    return sum(answer(p) == theirs.get(p["id"]) for p in student) / max(len(student), 1)


def registered_metrics(eval_dir: str | Path, method: str) -> tuple[dict, dict | None]:
    """(metrics an adapter is registered with, the base model's on the same rows) from an evaluation folder: without
    the predictions, with the student-teacher agreement that drift compares a night's with, when the teacher was scored."""
    eval_dir = Path(eval_dir)
    metrics = json.loads((eval_dir / f"{method}.metrics.json").read_text())
    base_path, teacher_path = eval_dir / "base.metrics.json", eval_dir / "teacher.metrics.json"
    baseline = json.loads(base_path.read_text()) if base_path.exists() else None
    if teacher_path.exists():
        metrics["teacher_agreement"] = agreement(metrics["predictions"], json.loads(teacher_path.read_text())["predictions"])
    metrics.pop("predictions", None)
    if baseline:
        metrics["baseline"] = {k: v for k, v in baseline.items() if k != "predictions"}
    return metrics, baseline


def model_card(kind: TaskKind, method: str, metrics: dict, baseline: dict | None) -> str:
    """A Hugging Face model card (YAML metadata + text): the adapter folder can be pushed to the Hub as it is."""
    cfg = kind.cfg
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
        card_line(kind),
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


def card_line(kind: TaskKind) -> str:
    """The model card's sentence on the task: its type, its labels where answers are one of them, the kind's note."""
    labels = label_set(kind)
    parts = [f"Task type {kind.type}"] + ([f"labels {', '.join(labels)}"] if labels else []) + ([kind.card_note] if kind.card_note else [])
    return "; ".join(parts) + "."
