from collections import Counter

from demos import creditmix


def test_seeded_and_deterministic():
    assert creditmix.generate(50, seed=3) == creditmix.generate(50, seed=3)
    assert creditmix.generate(50, seed=3) != creditmix.generate(50, seed=4)


def test_rows_look_like_creditmix_and_classes_are_imbalanced():
    rows = creditmix.generate(3000, seed=7)
    assert rows[0]["text"].startswith("Num_Bank_Accounts: ")
    assert "Credit_History_Age: " in rows[0]["text"] and "Payment_of_Min_Amount: " in rows[0]["text"]
    counts = Counter(r["label"] for r in rows)
    assert set(counts) == set(creditmix.LABELS)
    assert max(counts.values()) > 1.4 * min(counts.values())


def test_latent_rule_needs_three_features():
    assert creditmix.risk_label(5, 5, 1) == "Good"
    assert creditmix.risk_label(25, 5, 1) == "Standard"
    assert creditmix.risk_label(5, 45, 1) == "Standard"
    assert creditmix.risk_label(5, 5, 7) == "Standard"
    assert creditmix.risk_label(25, 45, 1) == "Bad"
    assert creditmix.risk_label(25, 45, 7) == "Bad"


def test_no_single_feature_decides_the_label():
    scores = creditmix.best_single_feature_f1(n=4000, seed=7)
    assert len(scores) == 8
    assert max(scores.values()) <= 0.60, scores
