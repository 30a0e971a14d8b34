"""The held-out half's generators: rows a user's file could hold, seeded, every label present."""

from collections import Counter

import pytest

from bench.generalize import _config
from bench.generators import HELD_OUT
from core.kinds import for_config
from core.kinds.data import rows_from_records


@pytest.mark.parametrize("name", sorted(HELD_OUT))
def test_rows_parse_as_the_task_types_file_and_repeat_by_seed(name, tmp_path):
    demo = HELD_OUT[name]
    cfg = _config(demo, tmp_path)
    rows = demo.generate(400, 1)
    assert rows == demo.generate(400, 1) and rows != demo.generate(400, 2)
    examples = rows_from_records(for_config(cfg), rows, f"<{name}>")
    assert len({e.id for e in examples}) == 400
    if demo.labels:
        assert set(Counter(e.label for e in examples)) == set(demo.labels)  # every label occurs
    assert all(set(r) & set(demo.answer_fields) == set() for r in demo.pool(20, 3))
