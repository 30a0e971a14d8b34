"""The development half's generators: rows a user's file could hold (tests/bench/generators/__init__.py says what that means)."""

import pytest

from bench.generators import DEVELOPMENT
from tests.bench.generators import check_rows


@pytest.mark.parametrize("name", sorted(DEVELOPMENT))
def test_rows_parse_as_the_task_types_file_and_repeat_by_seed(name, tmp_path):
    check_rows(DEVELOPMENT[name], tmp_path)
