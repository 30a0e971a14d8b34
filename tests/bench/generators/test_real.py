"""Real labeled text from a registry package: the pinned tarball checked, the protocol's draws disjoint."""

import pytest

from bench.generators import HELD_OUT
from bench.generators.real import TARBALL, tarball


def test_the_protocols_seeds_draw_disjoint_real_rows_enough_for_a_run():
    demo = HELD_OUT["sentences"]
    labeled, pool, fresh = demo.generate(240, 1), demo.pool(1500, 2), demo.generate(720, 3)  # what `bench generalize` draws
    texts = [{row["text"] for row in rows} for rows in (labeled, pool, fresh)]
    assert not texts[0] & texts[1] and not texts[0] & texts[2] and not texts[1] & texts[2]
    assert {row["label"] for row in labeled} == {"negative", "positive"}
    with pytest.raises(ValueError, match="seed 1 draws from 500 real rows; 501 asked"):
        demo.generate(501, 1)


def test_a_tarball_that_is_not_the_pinned_one_is_refused(tmp_path):
    (tmp_path / TARBALL).write_bytes(b"not the package")
    with pytest.raises(RuntimeError, match="sha256 .* expected 89302eb0"):
        tarball(tmp_path)
