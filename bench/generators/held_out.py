"""The held-out half: measured, never tuned on. Written and committed before any default was tuned.

* `claims`: insurance claims -> pay / pay-partial / deny / investigate ("pay" is a prefix of
  "pay-partial"); a conjunction of a policy state, an amount against a cover limit (digits or words)
  and a time span since the incident, with negation.
* `clinic`: nurse-line notes -> emergency / urgent / same-week / routine / self-care; a temperature,
  a symptom duration in hours, days or weeks, and red flags that may be stated as absent.
* `leave`: long HR e-mails -> approve / decline (imbalanced, about 3:1); days asked against days left
  and the notice given, both in varied units, among paragraphs that carry nothing.
* `products`: short marketplace titles -> 8 categories, imbalanced, two families sharing a prefix
  (electronics-audio / electronics-phone, home-kitchen / home-garden).
* `jobs`: job ads -> {title, city, salary_min, salary_max, remote, years_experience} (extraction).
"""

from __future__ import annotations

import random

from bench.generators.words import in_words, join, noisy, number
from demos import Demo

# --- claims --------------------------------------------------------------------------------------

CLAIM_LABELS = ["pay", "pay-partial", "deny", "investigate"]
CLAIM_INSTRUCTION = "Decide the insurance claim: pay, pay-partial, deny or investigate. Answer with the decision only."
_ITEMS = ["the kitchen ceiling", "our car's windscreen", "a laptop", "the garden fence", "the boiler", "a bicycle", "the roof tiles"]
_EVENTS = ["a storm", "a burst pipe", "a break-in", "a collision in the car park", "a fire in the neighbouring flat", "hail"]


def claim(active: bool, amount: int, limit: int, days: int, suspicious: bool) -> str:
    if not active:
        return "deny"
    if suspicious or days > 60:
        return "investigate"
    return "pay" if amount <= limit else "pay-partial"


def generate_claims(n: int, seed: int = 11, noise: float = 0.03) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        active = rng.random() < 0.78
        limit = rng.choice([1000, 2500, 5000, 10000])
        amount = int(limit * rng.uniform(0.2, 1.9)) // 10 * 10
        days = rng.choice([rng.randint(1, 40), rng.randint(61, 200)]) if rng.random() < 0.8 else rng.randint(1, 200)
        suspicious = rng.random() < 0.15
        span = f"{number(rng, days)} days ago" if rng.random() < 0.6 else f"{number(rng, max(1, days // 7))} weeks ago"
        if not span.startswith(("one week", "1 week")) and days // 7 == 1 and "weeks" in span:
            span = span.replace("weeks", "week")
        weeks_days = days if "days" in span else (max(1, days // 7)) * 7
        facts = [
            rng.choice(
                [
                    "The policy is in force and premiums are up to date.",
                    "Our policy is active.",
                    "We renewed the policy in January and it has not lapsed.",
                ]
                if active
                else [
                    "The policy lapsed after the last missed premium.",
                    "Our policy was cancelled before this happened.",
                    "We did not renew the policy this year.",
                ]
            ),
            f"{rng.choice(['The damage', 'The repair quote', 'The loss'])} comes to {number(rng, amount)} dollars"
            f" and the policy covers up to {number(rng, limit)} dollars.",
            f"It happened {span}, {rng.choice(_EVENTS)} damaged {rng.choice(_ITEMS)}.",
        ]
        if suspicious:
            facts.append(
                rng.choice(
                    [
                        "A second claim for the same item was filed by someone else.",
                        "The receipts we sent are dated after the incident.",
                        "The police report number we gave does not exist.",
                    ]
                )
            )
        elif rng.random() < 0.4:
            facts.append(
                rng.choice(
                    [
                        "There was no earlier claim for this item.",
                        "The police report is attached and checks out.",
                        "Nothing about the receipts is unusual.",
                    ]
                )
            )
        text = join(
            rng,
            facts,
            [
                "Photos are attached.",
                "Please call me in the afternoon.",
                "Thank you for your help.",
                "My reference is in the subject line.",
            ],
            ["Hello,", "To the claims team:", "", "Dear Sir or Madam,"],
        )
        label = noisy(rng, claim(active, amount, limit, weeks_days, suspicious), CLAIM_LABELS, noise)
        rows.append({"id": f"cl-{seed}-{i:05d}", "text": text, "label": label})
    return rows


# --- clinic --------------------------------------------------------------------------------------

CLINIC_LABELS = ["emergency", "urgent", "same-week", "routine", "self-care"]
CLINIC_INSTRUCTION = "Triage the nurse-line note as emergency, urgent, same-week, routine or self-care. Answer with the label only."
_RED_FLAGS = ["chest pain", "trouble breathing", "confusion", "a stiff neck"]
_COMPLAINTS = ["a cough", "a sore throat", "back pain", "a rash on the arm", "an earache", "stomach cramps", "a headache"]


def triage(temp: float, hours: int, red_flag: bool, chronic: bool) -> str:
    if red_flag and temp >= 38.0:
        return "emergency"
    if red_flag or temp >= 39.5:
        return "urgent"
    if hours >= 24 * 14:
        return "routine" if not chronic else "same-week"
    if temp >= 38.0 or chronic:
        return "same-week"
    return "self-care" if hours <= 72 else "routine"


def _duration(rng: random.Random, hours: int) -> str:
    if hours < 48 and rng.random() < 0.7:
        return f"{number(rng, hours)} hours"
    if hours < 24 * 21 and rng.random() < 0.7:
        d = hours // 24
        return f"{number(rng, d)} day{'s' if d != 1 else ''}"
    w = max(1, hours // (24 * 7))
    return f"{number(rng, w)} week{'s' if w != 1 else ''}"


def generate_clinic(n: int, seed: int = 12, noise: float = 0.02) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        temp = round(rng.choice([rng.uniform(36.4, 37.9), rng.uniform(38.0, 39.4), rng.uniform(39.5, 40.8)]), 1)
        hours = rng.choice([rng.randint(3, 70), rng.randint(96, 300), rng.randint(24 * 15, 24 * 60)])
        red_flag, chronic = rng.random() < 0.25, rng.random() < 0.2
        hours_stated = _duration(rng, hours)
        # what the note says is what decides: re-read the duration as written
        unit = hours_stated.split()[-1]
        value = hours_stated.rsplit(" ", 1)[0]
        spoken = {in_words(k): k for k in range(0, 100)}
        count = int(value) if value.isdigit() else spoken[value]
        hours = count * (1 if unit.startswith("hour") else 24 if unit.startswith("day") else 168)
        flag = rng.choice(_RED_FLAGS)
        facts = [
            f"Caller reports {rng.choice(_COMPLAINTS)} for {hours_stated}.",
            rng.choice([f"Temperature {temp} C.", f"Measured {temp} degrees this morning.", f"Fever of {temp}."])
            if temp >= 37.5 or rng.random() < 0.5
            else rng.choice(["No fever.", f"Temperature normal at {temp}."]),
            (f"Also mentions {flag}." if red_flag else rng.choice([f"Denies {flag}.", f"No {flag}.", f"Says there is no {flag}."])),
        ]
        if chronic:
            facts.append(rng.choice(["Has diabetes.", "Is on chemotherapy.", "Has a heart condition under treatment."]))
        text = join(
            rng,
            facts,
            ["Caller is the patient's daughter.", "Called back once.", "Prefers a morning slot.", "Speaks English and Polish."],
            ["Note:", "", "Call summary:"],
        )
        label = noisy(rng, triage(temp, hours, red_flag, chronic), CLINIC_LABELS, noise)
        rows.append({"id": f"cn-{seed}-{i:05d}", "text": text, "label": label})
    return rows


# --- leave ---------------------------------------------------------------------------------------

LEAVE_LABELS = ["approve", "decline"]
LEAVE_INSTRUCTION = "Decide the leave request under the policy: approve or decline. Answer with the label only."
_PARAGRAPHS = [
    "I hope the quarter-end close went well for everyone; the new reporting template saved us a lot of time.",
    "As discussed in the team meeting, I will make sure the handover notes are in the shared folder before I go.",
    "My manager is copied here and has seen the project plan for the coming weeks.",
    "If anything urgent comes up, Priya knows where the client files are and can reach me by phone.",
    "Thank you for sorting out the payroll question last month, it is all fine now.",
    "The office move is still planned for the spring, so nothing changes on that side for now.",
    "I have finished the compliance training that was due this month.",
]


def generate_leave(n: int, seed: int = 13, noise: float = 0.02) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        balance = rng.randint(0, 25)
        asked = rng.randint(1, 15)
        notice_days = rng.choice([rng.randint(1, 13), rng.randint(14, 90)])
        if rng.random() < 0.75:  # most requests are in order
            asked = rng.randint(1, max(1, balance)) if balance else asked
            notice_days = rng.randint(14, 90)
        approve = asked <= balance and notice_days >= 14
        notice = (
            f"{number(rng, notice_days)} days from now"
            if rng.random() < 0.5 or notice_days % 7
            else f"{number(rng, notice_days // 7)} week{'s' if notice_days // 7 != 1 else ''} from now"
        )
        facts = [
            f"I would like to take {number(rng, asked)} day{'s' if asked != 1 else ''} off, starting {notice}.",
            rng.choice(
                [
                    f"According to the portal I have {number(rng, balance)} days of leave left this year.",
                    f"My remaining balance is {number(rng, balance)} days.",
                    f"HR confirmed I still have {number(rng, balance)} days available.",
                ]
            ),
        ]
        body = join(rng, facts, _PARAGRAPHS, ["Hi Sam,", "Dear HR team,", "Hello,"], max_filler=5)
        text = body + " " + rng.choice(["Best regards, Alex", "Thanks, Jordan", "Kind regards, Morgan"])
        label = noisy(rng, "approve" if approve else "decline", LEAVE_LABELS, noise)
        rows.append({"id": f"lv-{seed}-{i:05d}", "text": text, "label": label})
    return rows


# --- products ------------------------------------------------------------------------------------

PRODUCT_LABELS = ["electronics-audio", "electronics-phone", "home-kitchen", "home-garden", "toys", "books", "clothing", "sports"]
PRODUCT_INSTRUCTION = "Give the product's category: " + ", ".join(PRODUCT_LABELS) + ". Answer with the category only."
_PRODUCTS = {
    "electronics-audio": (
        ["wireless earbuds", "bookshelf speaker", "over-ear headphones", "soundbar", "USB microphone", "turntable"],
        0.12,
    ),
    "electronics-phone": (
        ["smartphone case", "5G phone 128GB", "screen protector", "phone charger 30W", "unlocked handset", "MagSafe wallet"],
        0.14,
    ),
    "home-kitchen": (["chef's knife", "non-stick frying pan", "espresso machine", "cutting board", "stand mixer", "kettle"], 0.16),
    "home-garden": (["garden hose 20m", "pruning shears", "raised planter", "lawn mower", "bird feeder", "compost bin"], 0.08),
    "toys": (["building blocks set", "plush bear", "remote control car", "jigsaw puzzle 1000 pieces", "doll house", "wooden train"], 0.1),
    "books": (
        ["paperback thriller", "cookbook", "hardcover biography", "children's picture book", "travel guide", "poetry collection"],
        0.14,
    ),
    "clothing": (["denim jacket", "wool socks 3-pack", "linen shirt", "rain coat", "sneakers", "knitted scarf"], 0.18),
    "sports": (["yoga mat", "tennis racket", "cycling helmet", "dumbbell pair", "running shorts", "football"], 0.08),
}
_ADJ = ["new", "premium", "2-pack", "eco", "classic", "compact", "", "", "gift", "sale:"]
_BRANDS = ["Nordica", "Aster", "Kumo", "Velta", "Brightline", "Oakly & Co", "Tamsin"]


def generate_products(n: int, seed: int = 14, noise: float = 0.03) -> list[dict]:
    rng = random.Random(seed)
    labels, weights = list(_PRODUCTS), [w for _, w in _PRODUCTS.values()]
    rows = []
    for i in range(n):
        label = rng.choices(labels, weights)[0]
        item = rng.choice(_PRODUCTS[label][0])
        text = " ".join(
            w for w in [rng.choice(_BRANDS), rng.choice(_ADJ), item, rng.choice(["", "- black", "(blue)", "XL", "free shipping"])] if w
        )
        rows.append({"id": f"pr-{seed}-{i:05d}", "text": text, "label": noisy(rng, label, PRODUCT_LABELS, noise)})
    return rows


# --- jobs (extraction) ---------------------------------------------------------------------------

JOBS_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Job ad",
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 40},
        "city": {"type": "string", "minLength": 1, "maxLength": 24},
        "salary_min": {"type": "integer", "minimum": 0, "maximum": 1000000},
        "salary_max": {"type": "integer", "minimum": 0, "maximum": 1000000},
        "remote": {"type": "boolean"},
        "years_experience": {"type": "integer", "minimum": 0, "maximum": 30},
    },
    "required": ["title", "city", "salary_min", "salary_max", "remote", "years_experience"],
    "additionalProperties": False,
}
JOBS_INSTRUCTION = (
    "Extract the job ad's fields as JSON: title, city, salary range per year, whether remote work is possible, years of experience asked."
)
_TITLES = [
    "Data Engineer",
    "Nurse Practitioner",
    "Warehouse Lead",
    "Frontend Developer",
    "Payroll Specialist",
    "Site Reliability Engineer",
    "Sous Chef",
]
_CITIES = ["Rotterdam", "Denver", "Lyon", "Manchester", "Austin", "Krakow", "Toronto"]


def generate_jobs(n: int, seed: int = 15) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        title, city = rng.choice(_TITLES), rng.choice(_CITIES)
        low = rng.randrange(30, 120) * 1000
        high = low + rng.randrange(5, 40) * 1000
        remote = rng.random() < 0.5
        years = rng.randint(0, 10)
        salary = rng.choice(
            [f"${low:,} - ${high:,} per year", f"{low // 1000}k to {high // 1000}k a year", f"between {low:,} and {high:,} annually"]
        )
        lines = [
            rng.choice([f"We are hiring a {title} in {city}.", f"{title} ({city})", f"Join our {city} office as {title}."]),
            f"Pay: {salary}." if rng.random() < 0.5 else f"The role pays {salary}.",
            rng.choice(["Fully remote is fine.", "You can work from home.", "Hybrid or remote, your choice."])
            if remote
            else rng.choice(["This role is on site.", "No remote work for this position.", "You will work from our office."]),
            f"At least {number(rng, years, 0.3)} years of experience." if years else "No prior experience needed.",
        ]
        lines.insert(
            rng.randint(1, len(lines)),
            rng.choice(["Benefits include a pension plan.", "Apply by the end of the month.", "We value diverse teams."]),
        )
        target = {"title": title, "city": city, "salary_min": low, "salary_max": high, "remote": remote, "years_experience": years}
        rows.append({"id": f"jb-{seed}-{i:05d}", "document": "\n".join(lines), "target": target})
    return rows


GENERATORS = [
    Demo("claims", "classification", CLAIM_INSTRUCTION, generate_claims, ("label",), labels=CLAIM_LABELS),
    Demo("clinic", "classification", CLINIC_INSTRUCTION, generate_clinic, ("label",), labels=CLINIC_LABELS),
    Demo("leave", "classification", LEAVE_INSTRUCTION, generate_leave, ("label",), labels=LEAVE_LABELS),
    Demo("products", "classification", PRODUCT_INSTRUCTION, generate_products, ("label",), labels=PRODUCT_LABELS),
    Demo("jobs", "idp", JOBS_INSTRUCTION, generate_jobs, ("target",), schema=JOBS_SCHEMA),
]
