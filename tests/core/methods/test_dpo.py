"""DPO's pairs: the user's file when the task file names one, else built on-policy from the student's own mistakes."""

import json

import pytest

from core.common.rows import Example
from core.errors import DataError
from core.methods.dpo import pairs_for
from core.settings import ModelSettings


def test_a_preference_file_is_used_as_it_is_and_checked_against_the_labels(tiny_cfg, tmp_path):
    good, bad = tiny_cfg.labels[0], tiny_cfg.labels[1]
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"Delay: {i} days", "chosen": good, "rejected": bad}) for i in range(3)))
    tiny_cfg.data.preferences = path
    pairs, counts, source = pairs_for(tiny_cfg, ModelSettings(), [], None, None)
    assert counts == {"user": 3} and source == str(path) and [p.line for p in pairs] == [1, 2, 3]
    path.write_text(json.dumps({"prompt": "x", "chosen": good, "rejected": "maybe"}))
    with pytest.raises(DataError, match="rejected.*'maybe' is not one of the labels"):
        pairs_for(tiny_cfg, ModelSettings(), [], None, None)


def test_on_policy_pairs_choose_the_gold_label_and_reject_the_students_likeliest_other(tiny_cfg):
    rows = [Example(f"r{i}", f"Num_Bank_Accounts: {i}, Delay: {3 * i} days", label) for i, label in enumerate(tiny_cfg.labels * 2)]
    pairs, counts, source = pairs_for(tiny_cfg, ModelSettings(), rows, None, None)
    assert source == "pairs built on-policy from the training rows" and counts["gold"] == len(pairs) > 0
    assert all(p.chosen != p.rejected and {p.chosen, p.rejected} <= set(tiny_cfg.labels) for p in pairs)
    gold = {r.text: r.label for r in rows}
    assert all(p.chosen == gold[p.prompt] for p in pairs)
