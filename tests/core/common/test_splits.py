"""Balanced splits, and pools kept apart from held-out rows."""

from collections import Counter

from core.common.rows import Example
from core.common.splits import balanced_split

LABELS = ["Good", "Standard", "Bad"]


def test_balanced_split_is_balanced_and_disjoint():
    rows = [
        Example(f"{label}-{i}", f"t {label} {i}", label) for label, n in [("Good", 40), ("Standard", 100), ("Bad", 25)] for i in range(n)
    ]
    train, eval_ = balanced_split(rows, LABELS, train_per_class=50, eval_per_class=10, seed=0)
    assert Counter(e.label for e in eval_) == {"Good": 10, "Standard": 10, "Bad": 10}
    assert Counter(e.label for e in train) == {"Good": 50, "Standard": 50, "Bad": 50}
    assert not {e.id for e in eval_} & {e.id for e in train}


def test_eval_share_capped_by_rarest_class():
    rows = [Example(f"{label}-{i}", "t", label) for label, n in [("Good", 6), ("Bad", 50)] for i in range(n)]
    _, eval_ = balanced_split(rows, LABELS, train_per_class=5, eval_per_class=10, seed=0)
    assert Counter(e.label for e in eval_) == {"Good": 3, "Bad": 3}


def test_validation_never_takes_more_than_a_quarter_of_a_class():
    from core.common.splits import stratified_holdout

    rows = [
        Example(f"{label}-{i}", f"t {label} {i}", label) for label, n in [("Good", 120), ("Standard", 34), ("Bad", 3)] for i in range(n)
    ]
    rest, held = stratified_holdout(rows, LABELS, per_class=20, seed=0)
    assert Counter(e.label for e in held) == {"Good": 20, "Standard": 8}  # 34 // 4; 3 rows give none
    assert Counter(e.label for e in rest) == {"Good": 100, "Standard": 26, "Bad": 3}
    assert not {e.id for e in held} & {e.id for e in rest}


def test_a_pool_loses_repeated_inputs_and_inputs_of_held_out_rows_and_says_how_many():
    from core.common.splits import distinct_inputs

    pool = [Example(f"p{i}", text, None) for i, text in enumerate(["a", "b", "a", "c", "d", "c"])]
    kept, counts = distinct_inputs(pool, [Example("e1", "d", "Good"), Example("e2", "zz", "Bad")])
    assert [r.id for r in kept] == ["p0", "p1", "p3"]
    assert counts == {"rows": 6, "kept": 3, "duplicates_dropped": 2, "held_out_inputs_dropped": 1}
