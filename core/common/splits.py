"""Splits: balanced and stratified hold-outs, class balancing, inputs kept apart from held-out rows.

rows = balance(examples, labels, per_class=250, seed=0)
train, eval_ = balanced_split(rows, labels, train_per_class=250, eval_per_class=60, seed=0)
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict

from core.common.rows import Example, text_sha256
from core.errors import DataError


def distinct_inputs(rows: list[Example], held_out: list[Example]) -> tuple[list[Example], dict[str, int]]:
    """`rows` (an unlabeled pool) without repeated inputs and without inputs the held-out rows (validation, evaluation)
    hold, first occurrence kept; and how many of each were dropped. Identical text counts as identical input."""
    held = {text_sha256(r.text) for r in held_out}
    seen: set[str] = set()
    kept, duplicates, overlapping = [], 0, 0
    for row in rows:
        key = text_sha256(row.text)
        if key in held:
            overlapping += 1
        elif key in seen:
            duplicates += 1
        else:
            seen.add(key)
            kept.append(row)
    return kept, {"rows": len(rows), "kept": len(kept), "duplicates_dropped": duplicates, "held_out_inputs_dropped": overlapping}


def _by_label(examples: list[Example], labels: list[str]) -> dict[str, list[Example]]:
    groups: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        groups[e.label].append(e)
    return {label: groups[label] for label in labels}


def balance(examples: list[Example], labels: list[str], per_class: int, seed: int) -> list[Example]:
    """Exactly `per_class` rows of every present label: sampled when a class has more, repeated when fewer."""
    rng = random.Random(seed)
    out: list[Example] = []
    for group in _by_label(examples, labels).values():
        if not group:
            continue
        if len(group) >= per_class:
            out.extend(rng.sample(group, per_class))
        else:
            out.extend(group * (per_class // len(group)) + rng.sample(group, per_class % len(group)))
    rng.shuffle(out)
    return out


def stratified_holdout(examples: list[Example], labels: list[str], per_class: int, seed: int) -> tuple[list[Example], list[Example]]:
    """(rest, held out): up to `per_class` rows of every label held out, never more than a quarter of the label's rows
    (a rare class keeps three quarters of its rows for training: a rule that asked 20 of a class of 34 refused a
    realistic imbalanced file outright), the rest kept in order. A class of fewer than 4 rows gives none."""
    rng = random.Random(seed)
    held = set()
    for group in _by_label(examples, labels).values():
        held |= {id(e) for e in rng.sample(group, min(per_class, len(group) // 4))}
    return [e for e in examples if id(e) not in held], [e for e in examples if id(e) in held]


def balanced_split(
    examples: list[Example], labels: list[str], train_per_class: int, eval_per_class: int, seed: int, balance_rest: bool = True
) -> tuple[list[Example], list[Example]]:
    """Hold out the same number of rows of every class for evaluation; balance the rest for training
    (`balance_rest`; else the rest is returned as it is).

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
    return (balance(rest, labels, train_per_class, seed) if balance_rest else rest), eval_rows


def stratified_split(
    examples: list[Example], labels: list[str], fraction: float, max_per_class: int, seed: int
) -> tuple[list[Example], list[Example]]:
    """(rest, eval): `fraction` of every class (at most `max_per_class`, at least one) held out for evaluation, so the
    eval split grows with the data and keeps its class shares, and a small file keeps most rows for training.

    A class with fewer than `ceil(1 / fraction)` rows cannot give one eval row and keep the rest: DataError names it
    and says how many rows each class needs.
    """
    groups = {label: g for label, g in _by_label(examples, labels).items() if g}
    needed = math.ceil(1 / fraction) if fraction > 0 else 2
    short = {label: len(g) for label, g in groups.items() if len(g) < needed}
    if short:
        raise DataError(
            "<split>",
            None,
            "label",
            f"too few rows to hold {fraction:.0%} of each class out for evaluation: {short}; each class needs at least "
            f"{needed} rows (or give a data.eval file)",
        )
    rng = random.Random(seed)
    held = set()
    for group in groups.values():
        held |= {id(e) for e in rng.sample(group, max(1, min(max_per_class, int(len(group) * fraction))))}
    return [e for e in examples if id(e) not in held], [e for e in examples if id(e) in held]


def document_split(
    rows: list[Example], train_size: int, eval_size: int, seed: int, fraction: float = 0.2
) -> tuple[list[Example], list[Example]]:
    """A seeded held-out eval set of `fraction` of the rows (at most `eval_size`); the rest (at most `train_size` rows)
    for training (tasks without classes)."""
    needed = math.ceil(1 / fraction)
    if len(rows) < needed:
        raise DataError(
            "<split>",
            None,
            None,
            f"{len(rows)} rows: need at least {needed} to hold {fraction:.0%} out for evaluation (or give a data.eval file)",
        )
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    n_eval = max(1, min(eval_size, int(len(rows) * fraction)))
    return shuffled[n_eval:][:train_size], shuffled[:n_eval]
