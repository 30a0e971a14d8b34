"""The `invoices` demo task: seeded semi-structured business documents with their gold JSON.

Invoices, receipts and purchase orders in three layouts (key: value lines, a plain-text table,
free prose), four date formats, three number formats (1,234.50 / 1.234,50 / 1234.50), currency
symbols or codes, countries by name or city, one to three line items, an optional due date. The
gold JSON normalises all of it: ISO dates, numbers as numbers, ISO currency and country codes.
Everything a field needs is in the document; nothing is guessable from the layout alone.

    rows = generate(500, seed=7)         # [{"id", "document", "target"}, ...]
    SCHEMA                               # the task's JSON Schema (nested object, array, enums, patterns)
"""

from __future__ import annotations

import random
from datetime import date, timedelta

DATE = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
COUNTRIES = {
    "US": ("United States", "Chicago"),
    "DE": ("Germany", "Berlin"),
    "FR": ("France", "Lyon"),
    "GB": ("United Kingdom", "Leeds"),
    "JP": ("Japan", "Osaka"),
}
CURRENCIES = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}

SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Business document",
    "type": "object",
    "properties": {
        "doc_type": {"enum": ["invoice", "receipt", "purchase_order"]},
        "number": {"type": "string", "minLength": 1, "maxLength": 16},
        "date": {"type": "string", "pattern": DATE, "description": "issue date, ISO 8601"},
        "vendor": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 40},
                "country": {"enum": sorted(COUNTRIES)},
            },
            "required": ["name", "country"],
        },
        "currency": {"enum": sorted(CURRENCIES)},
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 4,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 32},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 999},
                    "price": {"type": "number", "minimum": 0, "maximum": 1000000, "description": "unit price"},
                },
                "required": ["name", "qty", "price"],
            },
        },
        "total": {"type": "number", "minimum": 0, "maximum": 10000000},
        "due_date": {"type": "string", "pattern": DATE, "description": "invoices only, when stated"},
    },
    "required": ["doc_type", "number", "date", "vendor", "currency", "items", "total"],
}

INSTRUCTION = "Extract the document's fields as JSON: doc_type, number, date, vendor, currency, items, total, due_date."

_VENDOR_A = ["Acme", "Northwind", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay", "Tyrell", "Soylent", "Cyberdyne"]
_VENDOR_B = ["Supplies", "Trading", "Industries", "Foods", "Logistics", "Components", "Office", "Tools"]
_VENDOR_C = ["Ltd", "GmbH", "Inc", "SA", "Co", "KK"]
_ITEMS = [
    "Steel bolts",
    "Printer paper",
    "USB cables",
    "Desk lamp",
    "Coffee beans",
    "Safety gloves",
    "Toner",
    "Notebooks",
    "Hex keys",
    "Monitor arm",
    "Cable ties",
    "Label tape",
    "Whiteboard",
    "Stapler",
    "Drill bits",
    "Tea bags",
]
_PREFIX = {"invoice": "INV", "receipt": "R", "purchase_order": "PO"}
_TITLE = {"invoice": "Invoice", "receipt": "Receipt", "purchase_order": "Purchase order"}
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]


def _fmt_date(d: date, style: int) -> str:
    return [
        d.isoformat(),
        f"{_MONTHS[d.month - 1]} {d.day}, {d.year}",
        f"{d.day} {_MONTHS[d.month - 1]} {d.year}",
        f"{d.day:02d}.{d.month:02d}.{d.year}",
    ][style]


def _fmt_amount(value: float, currency: str, style: int, symbol: bool) -> str:
    if currency == "JPY":
        number = f"{int(round(value)):,}"
    else:
        number = [f"{value:,.2f}", f"{value:,.2f}".replace(",", "_").replace(".", ",").replace("_", "."), f"{value:.2f}"][style]
    return f"{CURRENCIES[currency]}{number}" if symbol else f"{number} {currency}"


def _document(rng: random.Random) -> tuple[str, dict]:
    doc_type = rng.choice(list(_PREFIX))
    number = f"{_PREFIX[doc_type]}-{rng.randint(1000, 99999)}"
    issued = date(2023, 1, 1) + timedelta(days=rng.randint(0, 730))
    country = rng.choice(sorted(COUNTRIES))
    vendor = f"{rng.choice(_VENDOR_A)} {rng.choice(_VENDOR_B)} {rng.choice(_VENDOR_C)}"
    currency = rng.choice(sorted(CURRENCIES))
    items = []
    for description in rng.sample(_ITEMS, rng.randint(1, 3)):
        price = float(rng.randint(1, 400)) if currency == "JPY" else round(rng.uniform(0.5, 400), 2)
        if currency == "JPY":
            price *= 10
        items.append({"name": description, "qty": rng.randint(1, 12), "price": price})
    total = round(sum(i["qty"] * i["price"] for i in items), 2)
    due = issued + timedelta(days=rng.choice([14, 30, 45])) if doc_type == "invoice" and rng.random() < 0.7 else None

    date_style, num_style, symbol = rng.randrange(4), rng.randrange(3), rng.random() < 0.5
    amount = lambda v: _fmt_amount(v, currency, num_style, symbol)  # noqa: E731
    name, city = COUNTRIES[country]
    where = name if rng.random() < 0.5 else f"{city}, {name}"
    layout = rng.randrange(3)
    if layout == 0:  # key: value
        lines = [_TITLE[doc_type].upper(), f"No: {number}", f"Date: {_fmt_date(issued, date_style)}"]
        if due:
            lines.append(f"Due: {_fmt_date(due, rng.randrange(4))}")
        lines.append(f"From: {vendor}, {where}")
        lines += [f"- {i['qty']} x {i['name']} @ {amount(i['price'])}" for i in items]
        lines.append(f"Total: {amount(total)}")
    elif layout == 1:  # plain-text table
        lines = [f"{vendor} ({where})", f"{_TITLE[doc_type]} {number} / {_fmt_date(issued, date_style)}", "Qty | Item | Price"]
        lines += [f"{i['qty']} | {i['name']} | {amount(i['price'])}" for i in items]
        lines.append(f"TOTAL {amount(total)}")
        if due:
            lines.append(f"Payable by {_fmt_date(due, rng.randrange(4))}")
    else:  # prose
        parts = ", ".join(f"{i['qty']} {i['name']} at {amount(i['price'])} each" for i in items)
        text = (
            f"{_TITLE[doc_type]} {number} from {vendor} of {where}, dated {_fmt_date(issued, date_style)}: {parts}. Total {amount(total)}."
        )
        if due:
            text += f" Please pay by {_fmt_date(due, rng.randrange(4))}."
        lines = [text]
    target = {
        "doc_type": doc_type,
        "number": number,
        "date": issued.isoformat(),
        "vendor": {"name": vendor, "country": country},
        "currency": currency,
        "items": items,
        "total": total,
    }
    if due:
        target["due_date"] = due.isoformat()
    return "\n".join(lines), target


def generate(n: int, seed: int = 7) -> list[dict]:
    """`n` documents with gold targets: {"id", "document", "target"}."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        document, target = _document(rng)
        rows.append({"id": f"inv-{seed}-{i}", "document": document, "target": target})
    return rows
