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


def load_classification(path: str | Path, labels: list[str], require_labels: bool = True) -> list[Example]:
    """Read `text` (and `label`, `id`) rows; refuse empty files, unknown labels, missing fields."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, "no such file")
    records = read_records(path)
    if not records:
        raise DataError(path, None, None, "empty file: no rows")
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
        from core import creditmix

        demo = cfg.data.demo
        return [Example(**r) for r in creditmix.generate(demo.n_rows, seed=demo.seed)], f"creditmix generator (n={demo.n_rows}, seed={demo.seed})"
    return load_classification(cfg.data.train, cfg.labels), str(cfg.data.train)
