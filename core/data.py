"""Loading and splitting classification data (CSV or JSONL), refusing bad input early.

Every problem is reported as a `DataError` naming the file, the line and the field, before any
model is loaded: a run never starts on data it cannot use.

    rows = load_classification("train.jsonl", labels=["Good", "Standard", "Bad"])
    train, eval_ = balanced_split(rows, labels, train_per_class=250, eval_per_class=60, seed=0)
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path


class DataError(ValueError):
    """Unusable input; `str()` reads `FILE:LINE: field F: what is wrong`."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, problem: str) -> None:
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: field {field!r}: {problem}" if field else f"{where}: {problem}")


@dataclass
class Example:
    """One input and its gold answer as the model should write it: a label, or (idp) the target JSON text."""

    id: str
    text: str
    label: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(path, line, None, f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def _records(path: Path, text: str) -> list[tuple[int, dict]]:
    """(line number, record) pairs from a JSONL or CSV file."""
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise DataError(path, None, None, "empty file")
        # DictReader's line_num is the reader's position after the row: the row's last line.
        return [(reader.line_num, row) for row in reader]
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, number, None, f"invalid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise DataError(path, number, None, "expected a JSON object")
        records.append((number, record))
    return records


def read_records(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) pairs of a UTF-8 JSONL or CSV file; bad bytes or JSON raise DataError."""
    return _records(path, _decode(path))


def nonempty_records(path: Path) -> list[tuple[int, dict]]:
    """`read_records`, refusing a missing or empty file."""
    if not path.exists():
        raise DataError(path, None, None, "no such file")
    records = read_records(path)
    if not records:
        raise DataError(path, None, None, "empty file: no rows")
    return records


def load_classification(path: str | Path, labels: list[str], require_labels: bool = True) -> list[Example]:
    """Read `text` (and `label`, `id`) rows; refuse empty files, unknown labels, missing fields."""
    path = Path(path)
    records = nonempty_records(path)
    allowed = set(labels)
    examples = []
    for number, record in records:
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, number, "text", "missing or empty")
        label = record.get("label")
        if label in (None, ""):
            if require_labels:
                raise DataError(path, number, "label", "missing")
            label = None
        elif not isinstance(label, str) or label not in allowed:
            raise DataError(path, number, "label", f"unknown label {label!r}; expected one of {labels}")
        examples.append(Example(id=str(record.get("id") or f"{path.stem}-{number}"), text=text, label=label))
    if require_labels:
        seen = Counter(e.label for e in examples)
        if len(seen) < 2:
            raise DataError(path, None, "label", f"a single class {sorted(seen)}: need at least two to train or evaluate")
    return examples


def load_documents(path: str | Path, schema, require_targets: bool = True) -> list[Example]:
    """Read idp rows (`document`, `target`, `id`); a target that does not validate is refused with its pointer.

    `schema` is a `core.schema.TaskSchema`; targets are re-serialised as the decoder writes them
    (schema key order, compact), which is what SFT trains on.
    """
    path = Path(path)
    records = nonempty_records(path)
    rows = []
    for number, record in records:
        document = record.get("document")
        if not isinstance(document, str) or not document.strip():
            raise DataError(path, number, "document", "missing or empty")
        target = record.get("target")
        if isinstance(target, str):  # CSV cells, or JSONL that carries the target as text
            try:
                target = json.loads(target)
            except json.JSONDecodeError as exc:
                raise DataError(path, number, "target", f"not JSON: {exc.msg}") from None
        if target is None:
            if require_targets:
                raise DataError(path, number, "target", "missing")
            answer = None
        else:
            errors = schema.errors(target)
            if errors:
                raise DataError(path, number, "target", f"does not validate against the task schema: {errors[0]}")
            answer = schema.dumps(target)
        rows.append(Example(id=str(record.get("id") or f"{path.stem}-{number}"), text=document, label=answer))
    return rows


def to_record(cfg, row: Example) -> dict:
    """A row in the task's file format (what `load_rows` reads back)."""
    if cfg.type == "idp":
        return {"id": row.id, "document": row.text} | ({"target": json.loads(row.label)} if row.label is not None else {})
    return row.to_dict()


def split_rows(cfg, rows: list[Example]) -> tuple[list[Example], list[Example]]:
    """Train and eval rows as the task type wants them: balanced by class, or a seeded document split."""
    d, seed = cfg.data, cfg.training.seed
    if cfg.type == "idp":
        return document_split(rows, d.train_per_class, d.eval_per_class, seed)
    return balanced_split(rows, cfg.labels, d.train_per_class, d.eval_per_class, seed)


def load_rows(cfg, path: str | Path, require_answers: bool = True) -> list[Example]:
    """The task's rows from a file, whatever its type: labels (classification) or targets (idp)."""
    if cfg.type == "idp":
        return load_documents(path, cfg.task_schema(), require_answers)
    return load_classification(path, cfg.labels, require_labels=require_answers)


def document_split(rows: list[Example], train_size: int, eval_size: int, seed: int) -> tuple[list[Example], list[Example]]:
    """idp: a seeded held-out eval set; the rest (at most `train_size` rows) for training."""
    if len(rows) < 2:
        raise DataError("<split>", None, "target", f"{len(rows)} rows: need at least 2 to split into train and eval")
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    n_eval = min(eval_size, len(rows) // 2)
    return shuffled[n_eval:][:train_size], shuffled[:n_eval]


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Write rows atomically (temp file + rename) so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _by_label(examples: list[Example], labels: list[str]) -> dict[str, list[Example]]:
    groups: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        groups[e.label].append(e)
    return {label: groups[label] for label in labels}


def balance(examples: list[Example], labels: list[str], per_class: int, seed: int) -> list[Example]:
    """Exactly `per_class` rows of every present label: sampled when a class has more, repeated when fewer."""
    rng = random.Random(seed)
    out: list[Example] = []
    for label, group in _by_label(examples, labels).items():
        if not group:
            continue
        if len(group) >= per_class:
            out.extend(rng.sample(group, per_class))
        else:
            out.extend(group * (per_class // len(group)) + rng.sample(group, per_class % len(group)))
    rng.shuffle(out)
    return out


def balanced_split(
    examples: list[Example], labels: list[str], train_per_class: int, eval_per_class: int, seed: int
) -> tuple[list[Example], list[Example]]:
    """Hold out the same number of rows of every class for evaluation; balance the rest for training.

    The eval share is capped by the rarest class (keeping at least half of it for training), so
    evaluation stays balanced on imbalanced data.
    """
    groups = _by_label(examples, labels)
    present = {label: g for label, g in groups.items() if g}
    per_class = min(eval_per_class, min(len(g) for g in present.values()) // 2)
    if per_class < 1:
        raise DataError("<split>", None, "label", f"too few rows per class to split: {Counter(e.label for e in examples)}")
    rng = random.Random(seed)
    eval_rows, rest = [], []
    for group in present.values():
        shuffled = group[:]
        rng.shuffle(shuffled)
        eval_rows.extend(shuffled[:per_class])
        rest.extend(shuffled[per_class:])
    return balance(rest, labels, train_per_class, seed), eval_rows


def labeled_rows(cfg) -> tuple[list[Example], str]:
    """Every labeled row of a task (`data.train`, or the demo generator's output) and where it came from."""
    if cfg.data.train is None:
        demo = cfg.data.demo
        name = cfg.demo_generator()
        if name == "invoices":
            from core import invoices

            schema = cfg.task_schema()
            rows = [Example(r["id"], r["document"], schema.dumps(r["target"])) for r in invoices.generate(demo.n_rows, seed=demo.seed)]
        else:
            from core import creditmix

            rows = [Example(**r) for r in creditmix.generate(demo.n_rows, seed=demo.seed)]
        return rows, f"{name} generator (n={demo.n_rows}, seed={demo.seed})"
    return load_rows(cfg, cfg.data.train), str(cfg.data.train)
