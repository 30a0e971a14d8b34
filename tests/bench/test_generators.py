"""The generalisation protocol's generators: rows a user's file could hold, seeded, every label present."""

from collections import Counter

import pytest

from bench.generalize import _config
from bench.generators import DEVELOPMENT, GENERATORS, HELD_OUT
from bench.generators.words import in_words
from core.kinds import for_config
from core.kinds.data import rows_from_records


def test_the_halves_are_disjoint_and_varied():
    assert not set(DEVELOPMENT) & set(HELD_OUT) and len(GENERATORS) >= 8
    for half in (DEVELOPMENT, HELD_OUT):
        kinds = Counter(demo.type for demo in half.values())
        assert kinds["idp"] >= 1 and kinds["classification"] >= 3
    sizes = {len(demo.labels) for demo in GENERATORS.values() if demo.labels}
    assert min(sizes) == 2 and max(sizes) == 8
    prefixed = [d.name for d in GENERATORS.values() if d.labels and any(a != b and b.startswith(a) for a in d.labels for b in d.labels)]
    assert prefixed  # one label begins another somewhere (claims: pay / pay-partial)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_rows_parse_as_the_task_types_file_and_repeat_by_seed(name, tmp_path):
    demo = GENERATORS[name]
    cfg = _config(demo, tmp_path)
    rows = demo.generate(400, 1)
    assert rows == demo.generate(400, 1) and rows != demo.generate(400, 2)
    examples = rows_from_records(for_config(cfg), rows, f"<{name}>")
    assert len({e.id for e in examples}) == 400
    if demo.labels:
        assert set(Counter(e.label for e in examples)) == set(demo.labels)  # every label occurs
    assert all(set(r) & set(demo.answer_fields) == set() for r in demo.pool(20, 3))


def test_numbers_in_words():
    assert [in_words(n) for n in (0, 13, 47, 100, 1250, 36000)] == [
        "zero",
        "thirteen",
        "forty-seven",
        "one hundred",
        "one thousand two hundred fifty",
        "thirty-six thousand",
    ]
