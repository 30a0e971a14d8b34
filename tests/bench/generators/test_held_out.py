"""The held-out half's generators: rows a user's file could hold (tests/bench/generators/__init__.py says what that means)."""

import pytest

from bench.generators import HELD_OUT
from tests.bench.generators import check_rows


@pytest.mark.parametrize("name", sorted(HELD_OUT))
def test_rows_parse_as_the_task_types_file_and_repeat_by_seed(name, tmp_path):
    check_rows(HELD_OUT[name], tmp_path)
