"""CreditMix-style demo data: feature strings -> Good / Standard / Bad.

The latent rule (what the student has to learn):

    risk = [Interest_Rate >= 20] + [Delay_from_due_date >= 30] + [Num_of_Loan >= 5]
    label = Good if risk == 0, Standard if risk == 1, Bad if risk >= 2

Three numeric features each carry one risk flag, so no single feature decides the label; the
other five features (bank accounts, cards, debt, history age, minimum payment) are drawn
independently of the label as distractors. Flags fire with different rates (0.30 / 0.35 / 0.40),
which makes the classes imbalanced (about 27% Good, 45% Standard, 28% Bad), and `noise` of the
labels are replaced by a uniformly drawn other label. `best_single_feature_f1` measures how far
one feature alone gets (it stays near 0.5 macro-F1).

Usage:
    rows = generate(3000, seed=7)        # [{"id": "cm-00000", "text": "...", "label": "Standard"}, ...]
"""

from __future__ import annotations

import random

import numpy as np

LABELS = ["Good", "Standard", "Bad"]
INSTRUCTION = "Classify the customer's credit mix as Good, Standard or Bad. Answer with the label only."
NUMERIC_FEATURES = [
    "Num_Bank_Accounts",
    "Num_Credit_Card",
    "Interest_Rate",
    "Num_of_Loan",
    "Delay_from_due_date",
    "Outstanding_Debt",
    "Credit_History_Months",
]


def _flagged(rng: random.Random, p: float, low: range, high: range) -> tuple[int, bool]:
    flag = rng.random() < p
    return rng.choice(high if flag else low), flag


def risk_label(interest_rate: int, delay: int, num_loans: int) -> str:
    """The latent rule, noise-free."""
    risk = (interest_rate >= 20) + (delay >= 30) + (num_loans >= 5)
    return LABELS[min(risk, 2)]


# Traffic unlike the training data, for drift tests: how far each strength moves the generator.
SHIFTS = {
    # a distractor's range moved: debts up to 8,000 instead of 5,000
    "weak": {"debt_max": 8000.0},
    # the population moved: risk flags fire more often (more Bad customers), debts and histories longer
    "medium": {"debt_max": 12000.0, "history_max": 700, "flag_rates": (0.5, 0.55, 0.6)},
    # another system's export: other field names and order, new words
    "strong": {"debt_max": 12000.0, "flag_rates": (0.5, 0.55, 0.6), "layout": "export"},
}


def generate_row(rng: random.Random, noise: float, shift: dict | None = None) -> tuple[str, str, dict[str, float]]:
    shift = shift or {}
    rates = shift.get("flag_rates", (0.30, 0.35, 0.40))
    # Flagged and unflagged values are drawn from ranges with a gap between them, so every
    # flag is crisp in the text; a 135M model reads "25" vs "7" far more easily than 21 vs 19.
    interest, _ = _flagged(rng, rates[0], range(1, 13), range(20, 35))
    delay, _ = _flagged(rng, rates[1], range(0, 16), range(30, 61))
    loans, _ = _flagged(rng, rates[2], range(0, 4), range(6, 10))
    accounts = rng.randint(0, 10)
    cards = rng.randint(0, 10)
    debt = round(rng.uniform(0, shift.get("debt_max", 5000.0)), 2)
    history = rng.randint(12, shift.get("history_max", 400))
    min_payment = rng.choice(["Yes", "No", "NM"])
    label = risk_label(interest, delay, loans)
    if rng.random() < noise:
        label = rng.choice([other for other in LABELS if other != label])
    if shift.get("layout") == "export":
        text = (
            f"customer record | late by {delay} days | loans open {loans} | rate {interest}% | debt outstanding {debt:.2f} "
            f"| bank accounts {accounts} | credit cards {cards} | history {history} months | pays minimum {min_payment}"
        )
    else:
        text = (
            f"Num_Bank_Accounts: {accounts}; Num_Credit_Card: {cards}; Interest_Rate: {interest}; "
            f"Num_of_Loan: {loans}; Delay_from_due_date: {delay}; Outstanding_Debt: {debt:.2f}; "
            f"Credit_History_Age: {history // 12} Years and {history % 12} Months; Payment_of_Min_Amount: {min_payment}"
        )
    features = dict(zip(NUMERIC_FEATURES, [accounts, cards, interest, loans, delay, debt, history]))
    features["Payment_of_Min_Amount"] = ["Yes", "No", "NM"].index(min_payment)
    return text, label, features


def generate(n: int, seed: int = 7, noise: float = 0.03, shift: str | None = None) -> list[dict]:
    """`n` rows of {id, text, label}; the same seed always gives the same rows. `shift`: one of SHIFTS (drift tests)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        text, label, _ = generate_row(rng, noise, SHIFTS[shift] if shift else None)
        rows.append({"id": f"cm-{seed}-{i:05d}", "text": text, "label": label})
    return rows


def feature_table(n: int, seed: int = 7, noise: float = 0.03) -> tuple[list[dict[str, float]], list[str]]:
    """Numeric features and labels of the same rows `generate` makes, for baselines."""
    rng = random.Random(seed)
    feats, labels = [], []
    for _ in range(n):
        _, label, features = generate_row(rng, noise)
        feats.append(features)
        labels.append(label)
    return feats, labels


def best_single_feature_f1(n: int = 4000, seed: int = 7) -> dict[str, float]:
    """Balanced macro-F1 of the best depth-3 decision tree on each single feature (fit on half, scored on half)."""
    from sklearn.metrics import f1_score  # noqa: PLC0415 (sklearn costs ~1.5 s at import, which every command would pay)
    from sklearn.tree import DecisionTreeClassifier  # noqa: PLC0415

    feats, labels = feature_table(n, seed)
    y = np.array(labels)
    half = n // 2
    scores = {}
    for name in feats[0]:
        x = np.array([[row[name]] for row in feats])
        tree = DecisionTreeClassifier(max_depth=3, class_weight="balanced", random_state=0)
        tree.fit(x[:half], y[:half])
        scores[name] = float(f1_score(y[half:], tree.predict(x[half:]), average="macro"))
    return scores
