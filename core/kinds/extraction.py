"""Document extraction (`type: idp`): a document in, JSON that validates against the task's JSON Schema out.

Rows are `{"id"?, "document", "target"?}`; a target that does not validate is refused with the
JSON pointer of the problem, and targets are re-serialised exactly as the schema decoder writes
them (the schema's key order, compact), which is what SFT trains on.
"""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

import numpy as np

from core.common.config import TaskConfig
from core.common.json_schema import JsonSchema
from core.common.rows import Example, Pair
from core.drift.statistics import Signal, proportion_test
from core.errors import DataError
from core.evaluation.metrics import extraction_metrics, field_diff, resampled_field_f1
from core.evaluation.report import write_extraction_report
from core.kinds.base import TaskKind, trace_costs, traces_for_rows
from core.model.decoders import extraction_decoder
from core.model.loading import load_tokenizer
from core.model.schema import Extraction, SchemaDecoder, TaskSchema
from core.settings import ModelSettings
from core.teachers.asking.extraction import ExtractionAsking, extraction_answer
from core.teachers.base import EndpointTask, TeacherAnswer, TeacherTask
from core.training.kd_rows import generation_kd_rows


def task_schema(cfg: TaskConfig, settings: ModelSettings) -> TaskSchema:
    """The checked JSON Schema (`schema_file`, under the operator's size limit, or the demo's); raises SchemaError
    naming the pointer."""
    if cfg.schema_file is not None:
        return TaskSchema.load(cfg.schema_file, settings.max_schema_bytes)
    demo = cfg.demo()
    return TaskSchema.from_dict(demo.schema, f"<{demo.name} demo schema>")


class DocumentExtraction(TaskKind):
    generates = True
    accepts = frozenset({"json_schema"})  # a request may constrain the answer to its own schema
    type = "idp"
    summary_keys = ("schema_valid_rate", "field_f1", "exact_match", "corrections_per_doc", "latency_ms_p50", "cost_per_1k_usd")
    card_keys = ("field_f1", "schema_valid_rate", "exact_match", "corrections_per_doc")
    card_note = "output validated against the task's JSON Schema"
    defaults = {
        "instruction": "Extract the document's fields as JSON.",
        "promotion": {"primary_metric": "field_f1", "guard_min": {"schema_valid_rate": 1.0}},
        # A document and its JSON, not a text and a label. No validation split by default: scoring it means
        # constrained generation, ~10 s a document per validation on 2 CPU cores.
        "training": {"max_length": 512, "validation_per_class": 0},
    }

    # -- data --------------------------------------------------------------------------------
    def parse_records(self, records: list[tuple[int, dict]], path: Path, require_answers: bool) -> list[Example]:
        return [self._parse(record, path, line, require_answers) for line, record in records]

    def _parse(self, record: dict, path: Path, line: int, require_answer: bool) -> Example:
        document = record.get("document")
        if not isinstance(document, str) or not document.strip():
            raise DataError(path, line, "document", "missing or empty")
        target = record.get("target")
        if isinstance(target, str):  # CSV cells, or JSONL that carries the target as text
            try:
                target = json.loads(target)
            except json.JSONDecodeError as exc:
                raise DataError(path, line, "target", f"not JSON: {exc.msg}") from None
        if target is None:
            if require_answer:
                raise DataError(path, line, "target", "missing")
            answer = None
        else:
            schema = task_schema(self.cfg, self.settings)
            errors = schema.errors(target)
            if errors:
                raise DataError(path, line, "target", f"does not validate against the task schema: {errors[0]}")
            answer = schema.dumps(target)
        return Example(id=str(record.get("id") or f"{path.stem}-{line}"), text=document, label=answer)

    def to_record(self, row: Example) -> dict:
        return {"id": row.id, "document": row.text} | ({"target": json.loads(row.label)} if row.label is not None else {})

    def check_task(self) -> list[str]:
        warnings = super().check_task()
        schema = task_schema(self.cfg, self.settings)  # an unusable schema stops the run here, naming the pointer
        if schema.unenforced:
            warnings.append(f"the grammar cannot enforce {', '.join(schema.unenforced)}; outputs are validated after decoding instead")
        return warnings

    # -- model and evaluation ----------------------------------------------------------------
    def decoder(self, model, tokenizer, adapter: str | Path | None = None) -> SchemaDecoder:
        return extraction_decoder(self.cfg, model, tokenizer, task_schema(self.cfg, self.settings))  # the grammar compiles here (cached)

    def score(self, decoder: SchemaDecoder, rows: list[Example]) -> dict:
        results = decoder.extract([r.text for r in rows])
        metrics = extraction_metrics(
            [json.loads(r.label) for r in rows],
            [x.output for x in results],
            [x.valid for x in results],
            latencies_ms=[x.latency_ms for x in results],
        )
        metrics["latency_note"] = f"per document, amortised over batches of {decoder.batch_size}"
        metrics["prompt_tokens_per_request"] = float(np.mean([x.prompt_tokens for x in results]))
        metrics["completion_tokens_per_request"] = float(np.mean([x.completion_tokens for x in results]))
        metrics["predictions"] = [{"id": r.id, "valid": x.valid, "errors": x.errors, "output": x.output} for r, x in zip(rows, results)]
        return metrics

    def resampled_primary(self, rows: list[Example], metrics: dict, picks: np.ndarray) -> np.ndarray | None:
        if self.cfg.promotion.primary_metric != "field_f1":
            return None
        return resampled_field_f1([json.loads(r.label) for r in rows], [p["output"] for p in metrics["predictions"]], picks)

    def teacher_metrics(self, rows: list[Example], traces: dict[str, dict]) -> dict:
        found = traces_for_rows(rows, traces)
        outputs = [json.loads(t["output"]) if not t.get("error") else None for t in found]
        metrics = extraction_metrics(
            [json.loads(r.label) for r in rows],
            outputs,
            [o is not None for o in outputs],
            latencies_ms=[t["latency_s"] * 1000 for t in found],
        )
        metrics |= trace_costs(found, failed=sum(o is None for o in outputs), note="per document")
        metrics["predictions"] = [{"id": r.id, "valid": o is not None, "output": o} for r, o in zip(rows, outputs)]
        return metrics

    def teacher_task(self) -> TeacherTask:
        return ExtractionTeaching(self.cfg, task_schema(self.cfg, self.settings))

    def write_report(self, results: dict[str, dict], out_dir: Path) -> Path:
        return write_extraction_report(self.cfg.name, results, out_dir)

    # -- training ----------------------------------------------------------------------------
    def kd_rows(self, traces: list[dict]) -> tuple[list[dict], dict]:
        return generation_kd_rows(traces, self.cfg, load_tokenizer(self.cfg.model, self.settings))

    def preference_pairs(self, rows: list[Example], decoder: SchemaDecoder, teacher_traces: list[dict] | None):
        """chosen = the gold JSON, rejected = the student's own valid-but-wrong output on the same document, or
        (where the student was right) the gold with one field changed so that it still validates."""
        rng = random.Random(self.cfg.training.seed)
        rows = rows[: self.cfg.dpo.max_pairs]
        outputs = decoder.extract([r.text for r in rows])
        pairs, counts = [], {"student_wrong": 0, "perturbed_gold": 0, "dropped_identical": 0}
        for row, out in zip(rows, outputs):
            gold = json.loads(row.label)
            diff = field_diff(gold, out.output)
            if out.valid and (diff["wrong"] or diff["missing"] or diff["extra"]):
                pairs.append(Pair(row.text, row.label, out.text, "student_wrong"))
                counts["student_wrong"] += 1
                continue
            wrong = perturbed(gold, decoder.schema, rng)
            if wrong is None:
                counts["dropped_identical"] += 1
                continue
            pairs.append(Pair(row.text, row.label, decoder.schema.dumps(wrong), "perturbed_gold"))
            counts["perturbed_gold"] += 1
        return pairs, counts

    # -- drift -------------------------------------------------------------------------------
    def reference_answers(self, decoder: SchemaDecoder, texts: list[str]) -> list[dict]:
        return [{"output": x.text, "output_json": x.output, "schema_valid": x.valid} for x in decoder.extract(texts)]

    def drift_view(self, record: dict) -> dict | None:
        if record.get("schema_valid") is None:
            return None
        fields = list(task_schema(self.cfg, self.settings).schema.get("properties", {}))
        output = record.get("output_json") if isinstance(record.get("output_json"), dict) else {}
        missing = [f for f in fields if output.get(f) in (None, "", [], {})]
        return {"valid": bool(record["schema_valid"]), "missing": missing, "output": output}

    def agrees(self, view: dict, teacher_output: str) -> bool:
        try:
            return view["output"] == json.loads(teacher_output)
        except (TypeError, json.JSONDecodeError):
            return False

    def output_signals(self, reference: list[dict], window: list[dict]) -> list[Signal]:
        valid = lambda views: sum(v["valid"] for v in views)  # noqa: E731
        p = proportion_test(valid(reference), len(reference), valid(window), len(window))
        rates = {"reference": valid(reference) / len(reference), "window": valid(window) / len(window)}
        signals = [Signal("output.schema_valid_rate", rates["window"], p, rates)]
        fields = list(task_schema(self.cfg, self.settings).schema.get("properties", {}))
        missing = {f: (sum(f in v["missing"] for v in reference), sum(f in v["missing"] for v in window)) for f in fields}
        tested = {f: proportion_test(r, len(reference), w, len(window)) for f, (r, w) in missing.items()}
        if tested:
            worst = min(tested, key=tested.get)
            detail = {f: {"reference": r / len(reference), "window": w / len(window)} for f, (r, w) in missing.items()} | {
                "most_changed": worst
            }
            signals.append(Signal("output.missing_fields", missing[worst][1] / len(window), min(1.0, tested[worst] * len(tested)), detail))
        return signals


def perturbed(target: dict, schema: TaskSchema, rng: random.Random) -> dict | None:
    """A copy of `target` with one leaf changed so that it still validates: a plausible, valid, wrong answer."""
    leaves = []

    def walk(node, parent, key):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, node, k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, node, i)
        else:
            leaves.append((parent, key))

    wrong = copy.deepcopy(target)
    walk(wrong, None, None)
    rng.shuffle(leaves)
    for parent, key in leaves:
        value = parent[key]
        if isinstance(value, bool):
            candidates = [not value]
        elif isinstance(value, (int, float)):
            candidates = [value + 1, round(value * 10, 2), type(value)(max(value - 1, 0))]
        elif isinstance(value, str) and len(value) == 10 and value[4] == "-":  # an ISO date: move the day
            day = int(value[8:]) % 28 + 1
            candidates = [f"{value[:8]}{day:02d}"]
        elif isinstance(value, str):
            candidates = [value[:-1] or "x", value.upper() if value.upper() != value else value.lower()]
        else:
            continue
        for candidate in candidates:
            parent[key] = candidate
            if candidate != value and not schema.errors(wrong):
                return wrong
        parent[key] = value
    return None


def _as_answer(result: Extraction) -> TeacherAnswer:
    """An extraction as a teacher answer (invalid ones become failed traces)."""
    return extraction_answer(
        result.text, result.errors, result.top_logprobs, result.latency_ms / 1000, result.prompt_tokens, result.completion_tokens
    )


class ExtractionTeaching(ExtractionAsking, TeacherTask):
    """JSON held to the task's schema: `response_format` for an endpoint (`ExtractionAsking`), the schema decoder
    locally, medoid of votes."""

    def __init__(self, cfg: TaskConfig, schema: TaskSchema) -> None:
        super().__init__(cfg.max_new_tokens, schema)
        self.cfg = cfg
        self.batch_size = cfg.eval_batch_size  # generation batches well
        self.extractor: SchemaDecoder | None = None

    def endpoint(self) -> EndpointTask:
        # the schema was checked where the grammar engine is (here); the endpoint half validates as plain JSON Schema
        return ExtractionAsking(self.max_new_tokens, JsonSchema(self.schema.schema, self.schema.source))

    def attach(self, model, tokenizer, calibrated: bool, adapter: Path | None = None) -> None:
        self.extractor = extraction_decoder(self.cfg, model, tokenizer, self.schema)

    def answer(self, texts: list[str], top_k: int) -> list[TeacherAnswer]:
        return [_as_answer(x) for x in self.extractor.extract(texts, top_k=top_k)]

    def deliberate(self, texts, shot_sets, neighbours, top_k) -> list[TeacherAnswer]:
        """`votes` constrained decodes per document, each with its own retrieved shots; the medoid wins.

        The medoid is the vote whose fields agree most with the other votes' (self-consistency for structured output).
        """
        start = time.perf_counter()
        n_votes = len(shot_sets[0]) if shot_sets else 0
        runs = [self.extractor.extract(texts, shots=[s[v] for s in shot_sets], top_k=top_k) for v in range(n_votes)]
        share = (time.perf_counter() - start) / max(len(texts), 1)
        answers = []
        for i in range(len(texts)):
            votes = [run[i] for run in runs]
            agreement = [sum(field_diff(a.output or {}, b.output)["correct"] for b in votes if b is not a) for a in votes]
            answer = _as_answer(votes[int(np.argmax(agreement))])
            answer.latency_s = share
            answer.prompt_tokens = sum(v.prompt_tokens for v in votes)
            answer.completion_tokens = sum(v.completion_tokens for v in votes)
            answers.append(answer)
        return answers
