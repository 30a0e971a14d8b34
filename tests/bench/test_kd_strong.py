"""bench kd-strong's fresh evaluation rows: balanced, and from a seed none of the demo's splits or its pool use."""

from bench.kd_strong import fresh_eval_rows
from core.common.config import TaskConfig
from core.kinds import for_config
from core.kinds.data import labeled_rows, unlabeled_pool
from core.settings import ModelSettings


def test_fresh_rows_are_balanced_and_unseen_by_training_and_the_pool():
    cfg = TaskConfig()
    fresh = fresh_eval_rows(cfg, per_class=30)
    assert sorted(r.label for r in fresh) == ["Bad"] * 30 + ["Good"] * 30 + ["Standard"] * 30
    kind = for_config(cfg, ModelSettings())
    seen = {r.text for r in labeled_rows(kind)[0]} | {r.text for r in unlabeled_pool(kind)[0]}
    assert not {r.text for r in fresh} & seen
