"""The development half: defaults may be chosen on these (never on `held_out.py`).

* `loans`: loan applications -> approve / review-manual / review-legal / decline (two labels share
  their first tokens); income and debt in digits or words, a debt-to-income threshold, a legal flag.
* `reviews`: product reviews -> positive / negative / mixed, with negation ("not bad", "never
  disappointed") deciding as often as the sentiment word.
* `shipping`: delivery complaints -> on-time / late / very-late from a promised and an actual time span
  in hours, days or weeks.
* `alerts`: monitoring alerts -> escalate / ignore (imbalanced, about 1:4, 5% label noise); escalate only
  when production is hit and the error rate is over a threshold and nobody is on it.
* `receipts`: shop receipts -> {merchant, date, total, currency, items} (extraction).
"""

from __future__ import annotations

import random
from datetime import date, timedelta

from bench.generators.words import join, noisy, number
from demos import Demo

# --- loans ---------------------------------------------------------------------------------------

LOAN_LABELS = ["approve", "review-manual", "review-legal", "decline"]
LOAN_INSTRUCTION = "Route the loan application: approve, review-manual, review-legal or decline. Answer with the label only."


def route(income: int, debt: int, amount: int, legal: bool) -> str:
    if legal:
        return "review-legal"
    ratio = (debt + amount / 5) / max(income, 1)
    if ratio > 0.8:
        return "decline"
    return "approve" if ratio <= 0.4 else "review-manual"


def generate_loans(n: int, seed: int = 21, noise: float = 0.03) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        income = rng.randrange(20, 150) * 1000
        debt = int(income * rng.uniform(0.0, 0.9)) // 100 * 100
        amount = rng.randrange(5, 60) * 1000
        legal = rng.random() < 0.2
        facts = [
            f"The applicant earns {number(rng, income)} a year.",
            rng.choice(
                [
                    f"Existing debt stands at {number(rng, debt)}.",
                    f"They already owe {number(rng, debt)}.",
                    f"Outstanding loans total {number(rng, debt)}.",
                ]
            ),
            f"They ask to borrow {number(rng, amount)} over five years.",
        ]
        if legal:
            facts.append(
                rng.choice(
                    [
                        "A court judgment is registered against them.",
                        "The collateral is under a legal dispute.",
                        "Their business is in insolvency proceedings.",
                    ]
                )
            )
        elif rng.random() < 0.4:
            facts.append(
                rng.choice(["There are no court judgments on file.", "No legal disputes are pending.", "The collateral title is clean."])
            )
        text = join(
            rng,
            facts,
            ["They have banked with us for six years.", "The application came in through a broker.", "Documents were uploaded on time."],
            ["Application summary:", "", "Notes:"],
        )
        rows.append({"id": f"ln-{seed}-{i:05d}", "text": text, "label": noisy(rng, route(income, debt, amount, legal), LOAN_LABELS, noise)})
    return rows


# --- reviews -------------------------------------------------------------------------------------

REVIEW_LABELS = ["positive", "negative", "mixed"]
REVIEW_INSTRUCTION = "Classify the review's overall sentiment as positive, negative or mixed. Answer with the label only."
_ASPECTS = ["the battery", "the fit", "delivery", "the sound", "the price", "customer service", "the build quality"]
_GOOD, _BAD = ["great", "excellent", "worth it", "reliable", "impressive"], ["bad", "awful", "flimsy", "a waste of money", "disappointing"]


def _opinion(rng: random.Random, good: bool) -> str:
    aspect = rng.choice(_ASPECTS)
    if rng.random() < 0.45:  # say it through a negation of the opposite
        word = rng.choice(_BAD if good else _GOOD)
        return (
            rng.choice(
                [
                    f"{aspect.capitalize()} is not {word}.",
                    f"I would never call {aspect} {word}.",
                    f"{aspect.capitalize()} is hardly {word}.",
                ]
            )
            if good
            else rng.choice(
                [f"{aspect.capitalize()} is not {word} at all.", f"I can't say {aspect} is {word}.", f"Nobody would call {aspect} {word}."]
            )
        )
    return f"{aspect.capitalize()} is {rng.choice(_GOOD if good else _BAD)}."


def generate_reviews(n: int, seed: int = 22, noise: float = 0.03) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(REVIEW_LABELS)
        if label == "mixed":
            opinions = [_opinion(rng, True), _opinion(rng, False)]
        else:
            opinions = [_opinion(rng, label == "positive") for _ in range(rng.randint(1, 3))]
        text = join(rng, opinions, ["Bought it in March.", "Used it daily for a month.", "Ordered the blue one."], ["", "Review:"])
        rows.append({"id": f"rv-{seed}-{i:05d}", "text": text, "label": noisy(rng, label, REVIEW_LABELS, noise)})
    return rows


# --- shipping ------------------------------------------------------------------------------------

SHIPPING_LABELS = ["on-time", "late", "very-late"]
SHIPPING_INSTRUCTION = "Was the delivery on-time, late or very-late against its promise? Answer with the label only."


def _span(rng: random.Random, hours: int) -> str:
    if hours % 168 == 0 and rng.random() < 0.5:
        w = hours // 168
        return f"{number(rng, w)} week{'s' if w > 1 else ''}"
    if hours % 24 == 0:
        d = hours // 24
        return f"{number(rng, d)} day{'s' if d > 1 else ''}"
    return f"{number(rng, hours)} hours"


def generate_shipping(n: int, seed: int = 23, noise: float = 0.03) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        promised = rng.choice([24, 48, 72, 120, 168, 336])
        actual = max(12, promised + rng.choice([-24, 0, 0, 24, 48, 96, 168, 336]) if rng.random() < 0.8 else rng.choice([12, 36, 60]))
        delay = actual - promised
        label = "on-time" if delay <= 0 else "late" if delay <= 72 else "very-late"
        facts = [
            rng.choice([f"Delivery was promised within {_span(rng, promised)}.", f"The shop said it would take {_span(rng, promised)}."]),
            rng.choice([f"It arrived after {_span(rng, actual)}.", f"The parcel took {_span(rng, actual)} to reach me."]),
        ]
        text = join(
            rng,
            facts,
            ["The box was fine.", "Tracking stopped updating halfway.", "The courier left it with a neighbour."],
            ["", "Order 4471:"],
        )
        rows.append({"id": f"sh-{seed}-{i:05d}", "text": text, "label": noisy(rng, label, SHIPPING_LABELS, noise)})
    return rows


# --- alerts --------------------------------------------------------------------------------------

ALERT_LABELS = ["escalate", "ignore"]
ALERT_INSTRUCTION = "Should the on-call engineer escalate this alert or ignore it? Answer with escalate or ignore."


def generate_alerts(n: int, seed: int = 24, noise: float = 0.05) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prod = rng.random() < 0.55
        rate = round(rng.choice([rng.uniform(0.1, 4.9), rng.uniform(5.0, 30.0)]), 1)
        owned = rng.random() < 0.4
        facts = [
            f"Environment: {'production' if prod else rng.choice(['staging', 'dev', 'load-test'])}.",
            f"Error rate {rate}% over the last {rng.choice(['five', '10', 'fifteen'])} minutes.",
            rng.choice(["An engineer has acknowledged it.", "Someone is already on it."])
            if owned
            else rng.choice(["Nobody has acknowledged it.", "Unassigned."]),
        ]
        text = join(
            rng,
            facts,
            [f"Service: {rng.choice(['checkout', 'search', 'auth', 'billing'])}.", "Region eu-west-1.", "First seen at 03:12 UTC."],
            [""],
            max_filler=3,
        )
        label = "escalate" if prod and rate >= 5.0 and not owned else "ignore"
        rows.append({"id": f"al-{seed}-{i:05d}", "text": text, "label": noisy(rng, label, ALERT_LABELS, noise)})
    return rows


# --- receipts (extraction) -----------------------------------------------------------------------

RECEIPT_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Receipt",
    "type": "object",
    "properties": {
        "merchant": {"type": "string", "minLength": 1, "maxLength": 32},
        "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
        "currency": {"enum": ["EUR", "USD", "GBP"]},
        "total": {"type": "number", "minimum": 0, "maximum": 100000},
        "items": {"type": "integer", "minimum": 1, "maximum": 20, "description": "number of line items"},
    },
    "required": ["merchant", "date", "currency", "total", "items"],
    "additionalProperties": False,
}
RECEIPT_INSTRUCTION = "Extract the receipt's merchant, ISO date, currency code, total and number of line items as JSON."
_MERCHANTS = ["Corner Bakery", "FreshMart", "Hardware Haus", "Cafe Lumen", "Book Nook", "PetWorld"]
_SYMBOL = {"EUR": "€", "USD": "$", "GBP": "£"}


def generate_receipts(n: int, seed: int = 25) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        merchant, currency = rng.choice(_MERCHANTS), rng.choice(list(_SYMBOL))
        day = date(2026, 1, 1) + timedelta(days=rng.randint(0, 330))
        items = [
            (rng.choice(["bread", "milk", "nails", "coffee", "novel", "cat food", "tape", "apples"]), round(rng.uniform(0.5, 40), 2))
            for _ in range(rng.randint(1, 5))
        ]
        total = round(sum(p for _, p in items), 2)
        stamp = rng.choice([day.isoformat(), day.strftime("%d/%m/%Y"), day.strftime("%b %d, %Y")])
        lines = [merchant.upper(), stamp] + [f"{name:<10} {_SYMBOL[currency]}{price:.2f}" for name, price in items]
        lines += [
            f"TOTAL {_SYMBOL[currency] if rng.random() < 0.5 else currency + ' '}{total:.2f}",
            rng.choice(["Thank you!", "Card payment", ""]),
        ]
        target = {"merchant": merchant, "date": day.isoformat(), "currency": currency, "total": total, "items": len(items)}
        rows.append({"id": f"rc-{seed}-{i:05d}", "document": "\n".join(line for line in lines if line), "target": target})
    return rows


GENERATORS = [
    Demo("loans", "classification", LOAN_INSTRUCTION, generate_loans, ("label",), labels=LOAN_LABELS),
    Demo("reviews", "classification", REVIEW_INSTRUCTION, generate_reviews, ("label",), labels=REVIEW_LABELS),
    Demo("shipping", "classification", SHIPPING_INSTRUCTION, generate_shipping, ("label",), labels=SHIPPING_LABELS),
    Demo("alerts", "classification", ALERT_INSTRUCTION, generate_alerts, ("label",), labels=ALERT_LABELS),
    Demo("receipts", "idp", RECEIPT_INSTRUCTION, generate_receipts, ("target",), schema=RECEIPT_SCHEMA),
]
