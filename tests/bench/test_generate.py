"""bench generate's tight-budget comparison on the tiny model: under a budget of 1.2x the longest gold answer, the
grammar alone may be cut mid-JSON, the budget-aware closer always ends on a valid answer."""

from bench.generate import tight_budget
from core.model.loading import load_model
from core.model.schema import TaskSchema
from core.settings import ModelSettings
from demos import invoices


def test_budget_aware_closing_validates_every_answer_within_the_same_budget(tiny_cfg):
    model, tokenizer = load_model(tiny_cfg.model, ModelSettings())
    rows = invoices.generate(1, seed=9)
    schema = TaskSchema.from_dict(invoices.SCHEMA)
    figures = tight_budget(model, tokenizer, schema, [r["document"] for r in rows], [r["target"] for r in rows])
    assert figures["max_new_tokens"] == int(1.2 * figures["longest_gold_tokens"])
    assert figures["budget_aware"]["schema_valid_rate"] == 1.0
    for side in ("grammar_only", "budget_aware"):
        assert 0 < figures[side]["tokens"] <= figures["max_new_tokens"]
    assert figures["closed_early"] in (0, 1)
