"""OpenAI Evals definitions as this task's evaluation: their data rows as the eval split, their graders run on every
variant's answers and reported beside the product's own metrics.

An eval definition is the JSON OpenAI's API returned for an eval (`GET /evals/{id}`, or the body given to `POST /evals`):
`data_source_config` (a `custom` item schema) and `testing_criteria`, the graders. Its data file is JSONL, one `{"item":
{...}}` per line (a bare object is taken as the item). Graders that map to what this product measures run here:

* `string_check` (`operation` eq, ne, like = contains, ilike = contains ignoring case): 1 or 0 per row;
* `text_similarity` with `evaluation_metric: fuzzy_match`: a 0-1 similarity (difflib's ratio), passing at
  `pass_threshold`;
* `label_model`: a grading model reads the grader's messages (templates filled per row) and answers one of `labels`;
  a row passes when that label is one of `passing_labels`. The grading model is the task's teacher endpoint
  (`teacher.backend: openai`, asked for `teacher.model`, through the teacher's transport: egress rules, key, retries);
  the grader's own `model` names what graded at OpenAI and is reported beside it. Without such a teacher the grader is
  reported as not run, saying why. A reply that is not one of the labels leaves that row ungraded (counted).

The others (`score_model`, `python`, `multi`, other similarity metrics) need a scoring model or code this product does
not run: they are listed as not supported, by name and type, never silently dropped. Templates are
`{{item.field}}` (dots for nested fields) and `{{sample.output_text}}`, the variant's answer as text.

    ev = load_openai_eval("eval.json", "eval_data.jsonl")          # graders, unsupported, items; errors name file and line
    rows = ev.rows(input_field="ticket")                            # Examples: text from the item, label from the reference
    ev.grade({"eval-00001": "billing", ...}, ask=None)              # {grader name: {"pass_rate": ..., "mean_score": ...}}
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from core.common.files import atomic_write_text, read_records
from core.common.rows import Example
from core.errors import DataError

SUPPORTED = {"string_check", "text_similarity", "label_model"}
# A grading model's reply to chat messages, or None when it could not answer (`core.teachers.openai.OpenAITeacher.chat`).
Ask = Callable[[list[dict]], str | None]
OPERATIONS = {"eq", "ne", "like", "ilike"}
_TEMPLATE = re.compile(r"\{\{\s*([a-zA-Z_][\w.]*)\s*\}\}")


@dataclass
class Grader:
    name: str
    type: str
    input: str  # a template, usually {{sample.output_text}}
    reference: str  # a template, usually {{item.<field>}}
    operation: str = "eq"  # string_check
    pass_threshold: float = 1.0  # text_similarity

    def score(self, item: dict, output_text: str) -> float:
        """This grader's score of one answer (string_check: 1 or 0; fuzzy_match: the similarity)."""
        given, reference = render(self.input, item, output_text), render(self.reference, item, output_text)
        if self.type == "text_similarity":
            return difflib.SequenceMatcher(None, given, reference).ratio()
        return float(
            {"eq": given == reference, "ne": given != reference, "like": reference in given, "ilike": reference.lower() in given.lower()}[
                self.operation
            ]
        )

    def passes(self, score: float) -> bool:
        return score >= self.pass_threshold if self.type == "text_similarity" else score == 1.0


@dataclass
class LabelModelGrader:
    """OpenAI's `label_model` grader: a grading model labels each answer; the passing labels pass."""

    name: str
    model: str  # the model that graded at OpenAI (here the teacher's grades: reported beside it)
    input: list[dict]  # chat messages, their contents templates
    labels: list[str]
    passing_labels: list[str]
    type: str = "label_model"

    def messages(self, item: dict, output_text: str) -> list[dict]:
        rendered = [{"role": m["role"], "content": render(m["content"], item, output_text)} for m in self.input]
        return rendered + [
            {"role": "system", "content": f"Reply with exactly one of these labels and nothing else: {', '.join(self.labels)}."}
        ]

    def label(self, reply: str | None) -> str | None:
        """The label a reply names (case, quotes and a final period aside), None if it names none."""
        cleaned = (reply or "").strip().strip("'\"`.").strip().lower()
        return next((label for label in self.labels if label.lower() == cleaned), None)


@dataclass
class OpenAIEval:
    name: str
    graders: list[Grader | LabelModelGrader]
    unsupported: list[str]  # "name (type)" of each grader this product does not run
    items: list[dict] = field(default_factory=list)

    def needs_model(self) -> bool:
        """Whether a grader asks a grading model (`label_model`)."""
        return any(isinstance(g, LabelModelGrader) for g in self.graders)

    def ids(self) -> list[str]:
        return [f"eval-{n:05d}" for n in range(1, len(self.items) + 1)]

    def reference_field(self) -> str | None:
        """The item field the first grader compares with: the row's gold answer."""
        for grader in self.graders:
            if isinstance(grader, LabelModelGrader):
                continue  # it compares with no item field
            found = _TEMPLATE.fullmatch(grader.reference.strip())
            if found and found.group(1).startswith("item."):
                return found.group(1)[len("item.") :]
        return None

    def rows(self, input_field: str | None = None, source: str = "<eval data>") -> list[Example]:
        """The items as rows of this task: text from `input_field` (default: the only string field that is not the
        reference), the gold answer from the first grader's reference field."""
        label_field = self.reference_field()
        if label_field is None:
            raise DataError(source, None, "testing_criteria", "no supported grader compares with an {{item.<field>}}: no gold answer")
        rows = []
        for n, (row_id, item) in enumerate(zip(self.ids(), self.items), start=1):
            text_field = input_field or _input_field(item, label_field, source, n)
            text, label = _lookup(item, text_field), _lookup(item, label_field)
            if not isinstance(text, str) or not text.strip():
                raise DataError(source, n, f"item.{text_field}", "missing or empty: the model's input")
            if label is None:
                raise DataError(source, n, f"item.{label_field}", "missing: the graders' reference")
            rows.append(Example(row_id, text, label if isinstance(label, str) else json.dumps(label, sort_keys=True)))
        return rows

    def grade(self, answers: dict[str, str], ask: Ask | None = None, concurrency: int = 8) -> dict[str, dict]:
        """Each grader over the answers (row id -> answer text): pass rate and mean score. `label_model` graders ask
        `ask` (the grading model), `concurrency` rows at a time; without it they are reported as not run."""
        items = dict(zip(self.ids(), self.items))
        graded = [(items[row_id], text) for row_id, text in answers.items() if row_id in items]
        report = {}
        for grader in self.graders:
            if isinstance(grader, LabelModelGrader):
                report[grader.name] = _grade_with_model(grader, graded, ask, concurrency)
                continue
            scores = [grader.score(item, text) for item, text in graded]
            report[grader.name] = {
                "type": grader.type if grader.type != "string_check" else f"string_check ({grader.operation})",
                "pass_rate": sum(grader.passes(s) for s in scores) / max(len(scores), 1),
                "mean_score": sum(scores) / max(len(scores), 1),
                "rows": len(scores),
            }
        return report


def _grade_with_model(grader: LabelModelGrader, graded: list[tuple[dict, str]], ask: Ask | None, concurrency: int) -> dict:
    kind = f"label_model, {grader.model} at OpenAI"
    if ask is None:
        return {"type": kind, "not_run": "needs a grading model: set teacher.backend: openai (its endpoint grades)", "rows": 0}
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        labels = list(pool.map(lambda pair: grader.label(ask(grader.messages(*pair))), graded))
    named = [label for label in labels if label is not None]
    passed = sum(label in grader.passing_labels for label in named)
    return {
        "type": kind,
        "pass_rate": passed / max(len(named), 1),
        "mean_score": passed / max(len(named), 1),
        "rows": len(named),
        "ungraded": len(labels) - len(named),  # the grading model failed or named no label
        "labels": {label: named.count(label) for label in grader.labels},
    }


def render(template: str, item: dict, output_text: str) -> str:
    def value(match: re.Match) -> str:
        path = match.group(1)
        if path == "sample.output_text":
            return output_text
        if path.startswith("item."):
            found = _lookup(item, path[len("item.") :])
            return "" if found is None else found if isinstance(found, str) else json.dumps(found, sort_keys=True)
        return match.group(0)

    return _TEMPLATE.sub(value, template)


def _lookup(item: dict, dotted: str):
    value = item
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _input_field(item: dict, label_field: str, source: str, line: int) -> str:
    candidates = [k for k, v in item.items() if isinstance(v, str) and k != label_field]
    if len(candidates) != 1:
        raise DataError(source, line, "item", f"cannot tell the input field among {candidates}: name it (--input-field)")
    return candidates[0]


def answer_text(prediction: dict) -> str:
    """A variant's answer to one row as the graders read it (`sample.output_text`): the label, the JSON, the code."""
    for key in ("pred", "output", "code"):
        if key in prediction:
            value = prediction[key]
            return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return ""


def load_openai_eval(definition: str | Path, data: str | Path | None = None) -> OpenAIEval:
    """The eval's graders (supported and not) and its data items (from `data`, else the definition's own `items`, as
    `distill-slm import evals` writes it); bad JSON, an unknown operation or a line without an item stop with file,
    line and field."""
    definition = Path(definition)
    try:
        spec = json.loads(definition.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(definition, exc.lineno, None, f"not JSON: {exc.msg}") from None
    criteria = spec.get("testing_criteria")
    if not isinstance(criteria, list) or not criteria:
        raise DataError(definition, None, "testing_criteria", "missing or empty: an eval definition lists its graders")
    graders, unsupported = [], []
    for n, g in enumerate(criteria):
        kind, name = g.get("type"), g.get("name") or f"grader {n + 1}"
        where = f"testing_criteria[{n}]"
        if kind == "label_model":
            graders.append(_label_model(g, name, definition, where))
        elif kind == "text_similarity" and g.get("evaluation_metric") != "fuzzy_match":
            unsupported.append(f"{name} (text_similarity {g.get('evaluation_metric')})")
        elif kind not in SUPPORTED:
            unsupported.append(f"{name} ({kind})")
        else:
            if kind == "string_check" and g.get("operation", "eq") not in OPERATIONS:
                raise DataError(definition, None, f"{where}.operation", f"{g.get('operation')!r}: one of {sorted(OPERATIONS)}")
            for key in ("input", "reference"):
                if not isinstance(g.get(key), str):
                    raise DataError(definition, None, f"{where}.{key}", "missing: a template such as {{item.label}}")
            graders.append(Grader(name, kind, g["input"], g["reference"], g.get("operation", "eq"), float(g.get("pass_threshold", 1.0))))
    if data is None:
        return OpenAIEval(spec.get("name") or definition.stem, graders, unsupported, list(spec.get("items") or []))
    items = []
    for line, record in read_records(data):
        item = record.get("item", record)
        if not isinstance(item, dict):
            raise DataError(data, line, "item", "not an object")
        items.append(item)
    return OpenAIEval(spec.get("name") or definition.stem, graders, unsupported, items)


def _label_model(g: dict, name: str, definition: Path, where: str) -> LabelModelGrader:
    messages, labels, passing = g.get("input"), g.get("labels"), g.get("passing_labels")
    if not isinstance(messages, list) or not messages:
        raise DataError(definition, None, f"{where}.input", "missing: the grader's chat messages")
    for n, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, dict) and content.get("type") == "input_text":  # OpenAI's typed content
            content = content.get("text")
        if not isinstance(content, str) or message.get("role") not in ("system", "developer", "user", "assistant"):
            raise DataError(definition, None, f"{where}.input[{n}]", "a message needs a role and a text content")
        messages[n] = {"role": "system" if message["role"] == "developer" else message["role"], "content": content}
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(label, str) for label in labels):
        raise DataError(definition, None, f"{where}.labels", "the labels the grading model chooses from: at least two strings")
    if not isinstance(passing, list) or not passing or not set(passing) <= set(labels):
        raise DataError(definition, None, f"{where}.passing_labels", f"{passing!r}: a non-empty subset of labels {labels}")
    return LabelModelGrader(name, str(g.get("model") or "?"), messages, labels, passing)


def write_imported(definition: str | Path, data: str | Path, out: str | Path, input_field: str | None = None) -> dict:
    """`distill-slm import evals`: the eval's rows as `out/eval.jsonl` (id, text, label) and the eval with its items as
    `out/openai_eval.json`; returns what was found and the task file lines that use them."""
    ev = load_openai_eval(definition, data)
    rows = ev.rows(input_field, source=str(data))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "eval.jsonl", "".join(json.dumps(row.to_dict()) + "\n" for row in rows))
    spec = json.loads(Path(definition).read_text()) | {"items": ev.items}
    atomic_write_text(out / "openai_eval.json", json.dumps(spec, indent=1))
    return {
        "eval": ev.name,
        "rows": len(rows),
        "answers_found": sorted({row.label for row in rows})[:20],
        "graders_run": [f"{g.name} ({g.type})" for g in ev.graders],  # label_model: with a teacher endpoint to grade
        "graders_not_supported": ev.unsupported,
        "task_file": {"data": {"eval": str(out / "eval.jsonl"), "openai_eval": str(out / "openai_eval.json")}},
    }
