"""What every generator's rows must be, checked per half (test_development.py, test_held_out.py)."""

from collections import Counter
from pathlib import Path

from bench.generalize import _config
from core.kinds import for_config
from core.kinds.data import rows_from_records
from core.settings import ModelSettings
from demos import Demo


def check_rows(demo: Demo, tmp_path: Path) -> None:
    """Rows a user's file could hold: parsed as the task type's file, seeded, unique ids, every label present, a pool
    without answers."""
    cfg = _config(demo, tmp_path)
    rows = demo.generate(400, 1)
    assert rows == demo.generate(400, 1) and rows != demo.generate(400, 2)
    examples = rows_from_records(for_config(cfg, ModelSettings()), rows, f"<{demo.name}>")
    assert len({e.id for e in examples}) == 400
    if demo.labels:
        assert set(Counter(e.label for e in examples)) == set(demo.labels)  # every label occurs
    assert all(set(r) & set(demo.answer_fields) == set() for r in demo.pool(20, 3))
