from collections import Counter

from core.evaluation.metrics import extraction_metrics, field_diff, flatten
from core.model.schema import TaskSchema
from demos import invoices


def test_generator_is_seeded_varied_and_valid():
    rows = invoices.generate(300, seed=3)
    assert rows == invoices.generate(300, seed=3) and rows != invoices.generate(300, seed=4)
    schema = TaskSchema.from_dict(invoices.SCHEMA)
    assert all(not schema.errors(r["target"]) for r in rows)
    kinds = Counter(r["target"]["doc_type"] for r in rows)
    assert set(kinds) == {"invoice", "receipt", "purchase_order"} and min(kinds.values()) > 60
    layouts = Counter(("|" in r["document"]) + 2 * ("No:" in r["document"]) for r in rows)
    assert len(layouts) == 3  # table, key: value, prose
    for row in rows:  # everything a field needs is written in the document
        t = row["target"]
        assert t["number"] in row["document"] and t["vendor"]["name"] in row["document"]
        assert all(item["name"] in row["document"] for item in t["items"])
    assert any("due_date" in r["target"] for r in rows) and any("due_date" not in r["target"] for r in rows)


def test_field_metrics_normalise_numbers_dates_and_case():
    gold = {"vendor": {"name": "Acme Ltd"}, "items": [{"qty": 2, "price": 3.5}], "date": "2024-03-05", "total": 7}
    same = {"vendor": {"name": " acme  ltd"}, "items": [{"qty": 2.0, "price": 3.50}], "date": "2024-03-05", "total": 7.001}
    assert flatten(gold) == {"vendor.name": "Acme Ltd", "items[0].qty": 2, "items[0].price": 3.5, "date": "2024-03-05", "total": 7}
    assert field_diff(gold, same) == {"gold": 5, "predicted": 5, "correct": 5, "wrong": 0, "missing": 0, "extra": 0}
    worse = {"vendor": {"name": "Acme"}, "items": [{"qty": 2, "price": 3.5}, {"qty": 1, "price": 1}], "date": "2024-03-06"}
    diff = field_diff(gold, worse)
    assert (diff["correct"], diff["wrong"], diff["missing"], diff["extra"]) == (2, 2, 1, 2)
    m = extraction_metrics([gold, gold], [same, None], [True, False], latencies_ms=[10.0, 30.0])
    assert m["schema_valid_rate"] == 0.5 and m["exact_match"] == 0.5
    assert m["field_precision"] == 1.0 and m["field_recall"] == 0.5 and abs(m["field_f1"] - 2 / 3) < 1e-9
    assert m["corrections_per_doc"] == 2.5 and m["field_accuracy"]["items[].qty"] == 0.5
