"""Free-text answers (`type: text`): an input in, the reply a person (or the large model) wrote out.

What a chat assistant's fine-tuning file holds when its replies are neither a label set nor JSON: a support macro, a
SQL query, a rewrite in a house style, a persona's reply (`distill-slm import openai` writes such files as this type).
Rows are `{"id"?, "text", "answer"?}`. SFT trains on the answers; KD on the teacher's replies (sequence-level, with its
token log-probabilities where its tokenizer is the student's); DPO on the task's preference file, or the gold reply
against the student's own different one. Drift reads the replies' lengths and the student's agreement with the teacher
(chrF at least `AGREEMENT_CHRF`). A variant is scored by chrF against the reference answers (character n-gram
F-score: a paraphrase earns part credit, an empty reply none), exact match and answer length; the report prints a few
rows as each variant answered them. Nothing is run or parsed: the reply is the answer.

    kind = for_config(TaskConfig(type="text", data={"train": "replies.jsonl"}), ModelSettings())
    rows = load_rows(kind, "replies.jsonl")        # bad rows stop here, naming file, line and field
    metrics = kind.score(kind.decoder(model, tokenizer), rows)
    metrics["chrf"], metrics["exact_match"]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.common.rows import Example, Pair
from core.drift.statistics import Signal, ks_test
from core.errors import DataError
from core.evaluation.metrics import chrf, text_metrics
from core.evaluation.report import write_text_report
from core.kinds.base import TaskKind, trace_costs, traces_for_rows
from core.model.loading import load_tokenizer
from core.model.text_decoder import TextDecoder
from core.teachers.asking.text import TextAsking
from core.teachers.base import EndpointTask, TeacherAnswer, TeacherTask
from core.training.kd_rows import generation_kd_rows

# Drift: a student reply this close to the teacher's (chrF) counts as the same answer. On the examples in
# tests/core/kinds/test_text.py a reworded delivery note scores 0.56, the same SQL up to spacing 0.97, unrelated replies 0.19-0.27.
AGREEMENT_CHRF = 0.5


class FreeText(TaskKind):
    generates = True
    type = "text"
    summary_keys = ("chrf", "exact_match", "length_ratio", "latency_ms_p50", "cost_per_1k_usd")
    card_keys = ("chrf", "exact_match")
    card_note = "free-text replies, scored by chrF against reference answers"
    defaults = {
        "instruction": "Answer the user's message.",
        "promotion": {"primary_metric": "chrf", "guard_min": {}},
        # Scoring a validation split means generating every reply: none by default (as idp and codegen).
        "training": {"max_length": 512, "validation_per_class": 0},
    }

    # -- data --------------------------------------------------------------------------------
    def parse_records(self, records: list[tuple[int, dict]], path: Path, require_answers: bool) -> list[Example]:
        return [self._parse(record, path, line, require_answers) for line, record in records]

    def _parse(self, record: dict, path: Path, line: int, require_answer: bool) -> Example:
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, line, "text", "missing or empty")
        answer = record.get("answer")
        if answer is None and require_answer:
            raise DataError(path, line, "answer", "missing")
        if answer is not None and (not isinstance(answer, str) or not answer.strip()):
            raise DataError(path, line, "answer", "must be a non-empty string")
        return Example(id=str(record.get("id") or f"{path.stem}-{line}"), text=text, label=answer)

    def to_record(self, row: Example) -> dict:
        return {"id": row.id, "text": row.text} | ({"answer": row.label} if row.label is not None else {})

    # -- model and evaluation ----------------------------------------------------------------
    def decoder(self, model, tokenizer, adapter: str | Path | None = None) -> TextDecoder:
        return TextDecoder(model, tokenizer, self.cfg.instruction, self.cfg.max_new_tokens, self.cfg.eval_batch_size)

    def score(self, decoder: TextDecoder, rows: list[Example]) -> dict:
        answers = decoder.answer([r.text for r in rows])
        metrics = text_metrics([r.label for r in rows], [a.text for a in answers], [a.latency_ms for a in answers])
        metrics["latency_note"] = f"per reply, greedy, amortised over batches of {decoder.batch_size}"
        metrics["prompt_tokens_per_request"] = float(np.mean([a.prompt_tokens for a in answers])) if answers else 0.0
        metrics["completion_tokens_per_request"] = float(np.mean([a.completion_tokens for a in answers])) if answers else 0.0
        per_row = metrics.pop("chrf_per_row")
        metrics["predictions"] = [
            {"id": r.id, "output": a.text, "chrf": s, "stopped": a.stopped} for r, a, s in zip(rows, answers, per_row)
        ]
        return metrics

    def resampled_primary(self, rows: list[Example], metrics: dict, picks: np.ndarray) -> np.ndarray | None:
        if self.cfg.promotion.primary_metric != "chrf":
            return None
        return np.array([p["chrf"] for p in metrics["predictions"]], dtype=float)[picks].mean(axis=1)

    def teacher_metrics(self, rows: list[Example], traces: dict[str, dict]) -> dict:
        found = traces_for_rows(rows, traces)
        outputs = [t.get("output") or "" for t in found]
        metrics = text_metrics([r.label for r in rows], outputs, [t["latency_s"] * 1000 for t in found])
        metrics |= trace_costs(found, failed=sum(not t.get("output") for t in found), note="per reply")
        per_row = metrics.pop("chrf_per_row")
        metrics["predictions"] = [{"id": r.id, "output": o, "chrf": s} for r, o, s in zip(rows, outputs, per_row)]
        return metrics

    def teacher_task(self) -> TeacherTask:
        return TextTeaching(self.cfg.max_new_tokens, self.cfg.instruction, self.cfg.eval_batch_size)

    def write_report(self, results: dict[str, dict], out_dir: Path) -> Path:
        return write_text_report(self.cfg.name, results, out_dir)

    # -- training ----------------------------------------------------------------------------
    def kd_rows(self, traces: list[dict]) -> tuple[list[dict], dict]:
        return generation_kd_rows(traces, self.cfg, load_tokenizer(self.cfg.model, self.settings))

    def preference_pairs(self, rows: list[Example], decoder: TextDecoder, teacher_traces: list[dict] | None):
        """chosen = the reference reply, rejected = the student's own reply to the same input where it differs."""
        rows = rows[: self.cfg.dpo.max_pairs]
        pairs, counts = [], {"student_differs": 0, "dropped_identical": 0}
        for row, answer in zip(rows, decoder.answer([r.text for r in rows])):
            if answer.text.strip() == row.label.strip():
                counts["dropped_identical"] += 1
                continue
            pairs.append(Pair(row.text, row.label, answer.text, "student_differs"))
            counts["student_differs"] += 1
        return pairs, counts

    # -- drift -------------------------------------------------------------------------------
    def reference_answers(self, decoder: TextDecoder, texts: list[str]) -> list[dict]:
        return [{"output": a.text} for a in decoder.answer(texts)]

    def drift_view(self, record: dict) -> dict | None:
        if not isinstance(record.get("output"), str):
            return None
        return {"output": record["output"], "length": len(record["output"])}

    def agrees(self, view: dict, teacher_output: str) -> bool:
        """The student says what the teacher says in much the same words: chrF of the two replies at least `AGREEMENT_CHRF`."""
        return chrf(view["output"].strip(), teacher_output.strip()) >= AGREEMENT_CHRF

    def output_signals(self, reference: list[dict], window: list[dict]) -> list[Signal]:
        """How long the replies run: a student that starts rambling, or answering in a word, moves the distribution."""
        lengths = {"reference": [v["length"] for v in reference], "window": [v["length"] for v in window]}
        statistic, p = ks_test(lengths["reference"], lengths["window"])
        detail = {side: float(np.median(values)) for side, values in lengths.items()} | {"ks": statistic}
        return [Signal("output.reply_length", detail["window"], p, detail)]


class TextTeaching(TextAsking, TeacherTask):
    """The teacher's reply as written: from an endpoint (`TextAsking`) or the greedy decoder locally."""

    def __init__(self, max_new_tokens: int, instruction: str, batch_size: int) -> None:
        super().__init__(max_new_tokens)
        self.instruction, self.batch_size = instruction, batch_size
        self.decoder: TextDecoder | None = None

    def endpoint(self) -> EndpointTask:
        return TextAsking(self.max_new_tokens)

    def attach(self, model, tokenizer, calibrated: bool, adapter: Path | None = None) -> None:
        self.decoder = TextDecoder(model, tokenizer, self.instruction, self.max_new_tokens, self.batch_size)

    def _as_answers(self, replies) -> list[TeacherAnswer]:
        return [
            TeacherAnswer(a.text, latency_s=a.latency_ms / 1000, prompt_tokens=a.prompt_tokens, completion_tokens=a.completion_tokens)
            for a in replies
        ]

    def answer(self, texts: list[str], top_k: int) -> list[TeacherAnswer]:
        return self._as_answers(self.decoder.answer(texts))

    def deliberate(self, texts, shot_sets, neighbours, top_k) -> list[TeacherAnswer]:
        """One reply per input after its first retrieved shot set: free text has no vote to take."""
        return self._as_answers(self.decoder.answer(texts, shots=[s[0] for s in shot_sets]))
