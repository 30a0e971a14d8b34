"""Classification: a text in, one of a fixed set of labels out, scored by the calibrated decoder.

Rows are `{"id"?, "text", "label"?}` (JSONL or CSV). Splits are balanced by class; evaluation is
balanced; every answer carries calibrated label probabilities, so the service can escalate unsure
answers to the teacher and the report can price that cascade.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path

import numpy as np

from core.common.config import TaskConfig
from core.common.prompts import completion_chat, prompt_tokens, render_prompt
from core.common.rows import Example, Pair
from core.common.splits import balance
from core.drift.statistics import Signal, counts_test
from core.errors import DataError
from core.evaluation.metrics import classification_metrics, confidence_threshold, resampled_macro_f1
from core.evaluation.report import write_classification_report
from core.kinds.base import TaskKind, trace_costs, traces_for_rows
from core.model.calibrated import CalibratedDecoder, label_sequences, softmax
from core.model.decoders import classification_decoder
from core.model.loading import load_tokenizer
from core.teachers.asking.classification import LabelAsking
from core.teachers.base import EndpointTask, TeacherAnswer, TeacherTask


class Classification(TaskKind):
    type = "classification"
    summary_keys = ("macro_f1", "accuracy", "ece", "min_class_recall", "latency_ms_p50", "cost_per_1k_usd")
    card_keys = ("macro_f1", "accuracy", "min_class_recall", "ece")
    escalates = True
    closed_labels = True
    hf_task = "text-classification"
    defaults = {
        "instruction": "Classify the input as one of: {labels}. Answer with the label only.",
        # What a named pool trains besides KD: self-training needs answers with a calibrated confidence.
        "pool_methods": ["selftrain"],
    }

    # -- data --------------------------------------------------------------------------------
    def parse_records(self, records: list[tuple[int, dict]], path: Path, require_answers: bool) -> list[Example]:
        rows = [self._parse(record, path, line, require_answers) for line, record in records]
        seen = Counter(e.label for e in rows)
        if require_answers and len(seen) < 2:
            raise DataError(path, None, "label", f"a single class {sorted(seen)}: need at least two to train or evaluate")
        return rows

    def _parse(self, record: dict, path: Path, line: int, require_answer: bool) -> Example:
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, line, "text", "missing or empty")
        label = record.get("label")
        if label in (None, ""):
            if require_answer:
                raise DataError(path, line, "label", "missing")
            label = None
        elif not isinstance(label, str) or label not in self.cfg.labels:
            raise DataError(path, line, "label", f"unknown label {label!r}; expected one of {self.cfg.labels}")
        return Example(id=str(record.get("id") or f"{path.stem}-{line}"), text=text, label=label)

    def check_task(self) -> list[str]:
        warnings = super().check_task()
        # Labels the tokenizer cannot tell apart stop the run now.
        label_sequences(load_tokenizer(self.cfg.model, self.settings), self.cfg.labels)
        return warnings

    # -- model and evaluation ----------------------------------------------------------------
    def decoder(self, model, tokenizer, adapter: str | Path | None = None) -> CalibratedDecoder:
        return classification_decoder(self.cfg, model, tokenizer, None if adapter is None else Path(adapter))

    def score(self, decoder: CalibratedDecoder, rows: list[Example]) -> dict:
        """Metrics of one decoder on labeled rows, plus label choices with and without calibration for contrast."""
        preds = decoder.predict([r.text for r in rows])
        gold = [r.label for r in rows]
        metrics = classification_metrics(
            gold,
            [p.label for p in preds],
            decoder.labels,
            confidences=[p.confidence for p in preds],
            margins=[p.margin for p in preds],
            latencies_ms=[p.latency_ms for p in preds],
        )
        raw = np.array([[p.raw_probs[label] for label in decoder.labels] for p in preds])
        for key, calibrate in (("with_calibration", True), ("without_calibration", False)):
            picked = [decoder.labels[i] for i in decoder.calibrated_log_probs(raw, calibrate).argmax(axis=1)]
            m = classification_metrics(gold, picked, decoder.labels)
            metrics[key] = {k: m[k] for k in ("macro_f1", "accuracy", "predicted_distribution")}
        metrics["calibrated"] = decoder.calibrate
        metrics["content_free_prior"] = dict(zip(decoder.labels, map(float, decoder.prior())))
        metrics["latency_note"] = f"per request, amortised over batches of {decoder.batch_size}"
        metrics["prompt_tokens_per_request"] = float(np.mean([prompt_tokens(decoder.tokenizer, decoder.instruction, r.text) for r in rows]))
        metrics["completion_tokens_per_request"] = 0.0  # labels are scored, not generated
        metrics["predictions"] = [
            {"id": r.id, "gold": r.label, "pred": p.label, "confidence": round(p.confidence, 4)} for r, p in zip(rows, preds)
        ]
        return metrics

    def resampled_primary(self, rows: list[Example], metrics: dict, picks: np.ndarray) -> np.ndarray | None:
        if self.cfg.promotion.primary_metric != "macro_f1":
            return None
        predictions = metrics["predictions"]
        return resampled_macro_f1([p["gold"] for p in predictions], [p["pred"] for p in predictions], self.cfg.labels, picks)

    def teacher_metrics(self, rows: list[Example], traces: dict[str, dict]) -> dict:
        found = traces_for_rows(rows, traces)
        preds = [t["output"] if not t.get("error") else None for t in found]
        confidences = [max((t.get("label_probs") or {"": 0.0}).values()) for t in found]
        metrics = classification_metrics(
            [r.label for r in rows], preds, self.cfg.labels, confidences=confidences, latencies_ms=[t["latency_s"] * 1000 for t in found]
        )
        metrics |= trace_costs(found, failed=sum(p is None for p in preds), note="per request, one at a time")
        metrics["predictions"] = [
            {"id": r.id, "gold": r.label, "pred": p, "confidence": round(c, 4)} for r, p, c in zip(rows, preds, confidences)
        ]
        return metrics

    def teacher_task(self) -> TeacherTask:
        return LabelTeaching(self.cfg)

    def write_report(self, results: dict[str, dict], out_dir: Path) -> Path:
        return write_classification_report(self.cfg.name, results, out_dir)

    # -- training ----------------------------------------------------------------------------
    def kd_rows(self, traces: list[dict]) -> tuple[list[dict], dict]:
        """The teacher's answer and its label distribution (in `self.cfg.labels` order) per trace.

        Traces are first balanced by the teacher's answer (each label's traces repeated up to the most
        common label's count), as the SFT split is by gold label: an unlabeled pool is rarely balanced,
        and a teacher's soft targets on it carry its prior, which a student learns before anything the
        input says. (Balance alone did not save the creditmix student: see the README's `kd` figures.)
        """
        counts = Counter(trace["output"] for trace in traces)
        by_id = {trace["id"]: trace for trace in traces}
        answers = [Example(trace["id"], trace["prompt"], trace["output"]) for trace in traces]
        rows = []
        for example in balance(answers, list(counts), max(counts.values(), default=0), self.cfg.training.seed):
            trace = by_id[example.id]
            rows.append(
                {
                    **completion_chat(self.cfg.instruction, trace["prompt"], trace["output"]),
                    "label_targets": trace_distribution(trace, self.cfg.labels),
                }
            )
        return rows, {"teacher_answers": dict(counts), "rows_after_balancing": len(rows)}

    def confident_rows(self, validation, validation_traces, pool_traces) -> tuple[list[Example], dict]:
        """Pool answers at or above the lowest confidence at which the labeler's validation answers are
        `self_training.min_precision` correct. With none reaching it nothing is added, and the report says so."""
        checked = traces_for_rows(validation, validation_traces)
        labeler = self.teacher_metrics(validation, validation_traces)
        chosen = confidence_threshold(
            [_confidence(t) for t in checked],
            [t["output"] == r.label for r, t in zip(validation, checked)],
            self.cfg.self_training.min_precision,
        )
        threshold = chosen["threshold"]
        usable = [t for t in pool_traces if not t.get("error")]
        kept = [Example(t["id"], t["prompt"], t["output"]) for t in usable if threshold is not None and _confidence(t) >= threshold]
        report = {
            "labeler": labeler["teacher"],
            "labeler_validation_macro_f1": round(labeler["macro_f1"], 4),
            "min_precision": self.cfg.self_training.min_precision,
            "threshold": chosen,
            "pool_answers": len(usable),
            "pool_failed": len(pool_traces) - len(usable),
            "pool_kept": len(kept),
            "pool_kept_per_label": {label: sum(e.label == label for e in kept) for label in self.cfg.labels},
        }
        if threshold is None:
            report["why_none"] = (
                f"no confidence threshold makes the labeler's validation answers {self.cfg.self_training.min_precision:g} precise"
            )
        return kept, report

    def preference_pairs(self, rows: list[Example], decoder: CalibratedDecoder, teacher_traces: list[dict] | None):
        """chosen = gold label (rows) or teacher label (traces), rejected = the student's likeliest wrong label;
        kept in balance (`label_balanced`) so that DPO moves no label's prior."""
        sources = [(r.text, r.label, "gold") for r in rows] + [(t["prompt"], t["output"], "teacher") for t in teacher_traces or []]
        sources = sources[: self.cfg.dpo.max_pairs]
        preds = decoder.predict([text for text, _, _ in sources])
        wrong_side, right_side, dropped_identical = [], [], 0
        for (text, chosen, source), pred in zip(sources, preds):
            wrong = sorted(((p, label) for label, p in pred.probs.items() if label != chosen), reverse=True)
            if not wrong:
                dropped_identical += 1
                continue
            (wrong_side if pred.label != chosen else right_side).append(Pair(text, chosen, wrong[0][1], source))
        # The student's own mistakes are the most informative pairs: offer them first.
        kept = label_balanced(wrong_side + right_side)
        student_wrong = {id(p) for p in wrong_side}
        counts = {
            "gold": sum(p.source == "gold" for p in kept),
            "teacher": sum(p.source == "teacher" for p in kept),
            "student_was_wrong": sum(id(p) in student_wrong for p in kept),
            "dropped_identical": dropped_identical,
            "dropped_to_balance": len(wrong_side) + len(right_side) - len(kept),
        }
        return kept, counts

    # -- drift -------------------------------------------------------------------------------
    def reference_answers(self, decoder: CalibratedDecoder, texts: list[str]) -> list[dict]:
        return [{"output": p.label, "confidence": p.confidence, "label_probs": p.probs} for p in decoder.predict(texts)]

    def drift_view(self, record: dict) -> dict | None:
        if record.get("output") not in self.cfg.labels:
            return None
        return {"label": record["output"], "confidence": record.get("confidence")}

    def agrees(self, view: dict, teacher_output: str) -> bool:
        return view["label"] == teacher_output

    def output_signals(self, reference: list[dict], window: list[dict]) -> list[Signal]:
        ref, win = Counter(v["label"] for v in reference), Counter(v["label"] for v in window)
        chi2, p, js = counts_test(ref, win, self.cfg.labels)
        share = lambda c: {label: c.get(label, 0) / max(sum(c.values()), 1) for label in self.cfg.labels}  # noqa: E731
        detail = {"jensen_shannon": js, "reference": share(ref), "window": share(win)}
        return [Signal("output.labels", chi2, p, detail)]


def label_balanced(pairs: list[Pair]) -> list[Pair]:
    """The pairs, keeping each label chosen exactly as often as it is rejected (earlier pairs first).

    The likeliest wrong label is not spread evenly: on an ordinal scale the middle class is the
    runner-up for both ends, so unbalanced pairs push it down everywhere (on the creditmix demo DPO
    cost "Standard" 0.43 recall). A set in which every label is chosen as often as rejected is a
    union of cycles (a>b, b>c with c>a; a>b with b>a); it sharpens contrasts and shifts no prior.
    3-cycles go first since each keeps three pairs for the two a 2-cycle keeps.
    """
    by_edge: dict[tuple[str, str], list[Pair]] = {}
    for pair in pairs:
        by_edge.setdefault((pair.chosen, pair.rejected), []).append(pair)
    labels = sorted({label for edge in by_edge for label in edge})
    cycles = list(itertools.permutations(labels, 3)) + list(itertools.combinations(labels, 2))
    kept = []
    for cycle in cycles:
        edges = [(cycle[i], cycle[(i + 1) % len(cycle)]) for i in range(len(cycle))]
        if n := min(len(by_edge.get(edge, [])) for edge in edges):
            for edge in edges:
                kept += by_edge[edge][:n]
                del by_edge[edge][:n]
    order = {id(p): i for i, p in enumerate(pairs)}
    return sorted(kept, key=lambda p: order[id(p)])


def _confidence(trace: dict) -> float:
    """The labeler's probability of its own answer (0 for a failed answer)."""
    return 0.0 if trace.get("error") else max((trace.get("label_probs") or {trace["output"]: 1.0}).values())


def trace_distribution(trace: dict, labels: list[str]) -> list[float]:
    """The teacher's label distribution of a trace in `labels` order (one-hot on its answer when it gave none)."""
    probs = trace.get("label_probs") or {trace["output"]: 1.0}
    targets = [float(probs.get(label, 0.0)) for label in labels]
    total = sum(targets)
    return [p / total for p in targets]


class LabelTeaching(LabelAsking, TeacherTask):
    """Labels from an endpoint (`LabelAsking`) or a local model (calibrated scores, votes)."""

    def __init__(self, cfg: TaskConfig) -> None:
        super().__init__(cfg.labels)
        self.instruction, self.cfg = cfg.instruction, cfg
        self.decoder: CalibratedDecoder | None = None
        self.calibrate_votes = cfg.calibration.enabled
        self.retrieval_weight = cfg.teacher.retrieval_weight

    def endpoint(self) -> EndpointTask:
        return LabelAsking(self.labels)

    def attach(self, model, tokenizer, calibrated: bool, adapter: Path | None = None) -> None:
        # Votes of an adapter are calibrated only where adapters are (`calibration.adapters`): see that field.
        self.calibrate_votes = self.cfg.calibration.enabled and (adapter is None or self.cfg.calibration.adapters)
        if calibrated:  # zero-shot: the decoder a served variant runs (an adapter calibrated only per calibration.adapters)
            self.decoder = classification_decoder(self.cfg, model, tokenizer, adapter)
        else:  # the deliberate backend calibrates each vote under its own shots
            self.decoder = CalibratedDecoder(model, tokenizer, self.labels, self.instruction, calibrate=False)

    def answer(self, texts: list[str], top_k: int) -> list[TeacherAnswer]:
        start = time.perf_counter()
        preds = self.decoder.predict(texts)
        share = (time.perf_counter() - start) / max(len(texts), 1)
        tok = self.decoder.tokenizer
        return [
            TeacherAnswer(p.label, p.probs, latency_s=share, prompt_tokens=prompt_tokens(tok, self.instruction, t), completion_tokens=1)
            for t, p in zip(texts, preds)
        ]

    def deliberate(self, texts, shot_sets, neighbours, top_k) -> list[TeacherAnswer]:
        return [self._vote(text, shots, near) for text, shots, near in zip(texts, shot_sets, neighbours)]

    def _vote(self, text: str, shot_sets, neighbours) -> TeacherAnswer:
        """Each vote calibrated on a content-free input under the same shots; votes averaged; the neighbours'
        similarity-weighted label histogram mixed in (`teacher.retrieval_weight`)."""
        start = time.perf_counter()
        tokenizer = self.decoder.tokenizer
        prompts = []
        for shots in shot_sets:
            prompts.append(render_prompt(tokenizer, self.instruction, text, shots))
            if self.calibrate_votes:
                prompts.append(render_prompt(tokenizer, self.instruction, "N/A", shots))
        probs = softmax(self.decoder.prompt_log_likelihoods(prompts))
        if self.calibrate_votes:
            probs = probs[0::2] / np.clip(probs[1::2], 1e-12, None)
            probs = probs / probs.sum(axis=1, keepdims=True)
        voted = probs.mean(axis=0)
        histogram = np.zeros(len(self.labels))
        for row, similarity in neighbours:
            histogram[self.labels.index(row.label)] += max(similarity, 0.0)
        histogram = histogram / histogram.sum() if histogram.sum() > 0 else np.full(len(self.labels), 1 / len(self.labels))
        final = (1 - self.retrieval_weight) * voted + self.retrieval_weight * histogram
        return TeacherAnswer(
            self.labels[int(final.argmax())],
            {label: float(p) for label, p in zip(self.labels, final)},
            latency_s=time.perf_counter() - start,
            prompt_tokens=sum(len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts),
            completion_tokens=len(prompts),
            extra={"votes": [self.labels[int(p.argmax())] for p in probs]},
        )
