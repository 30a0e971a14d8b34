"""Support tickets: free text -> P1 / P2 / P3, by a rule over three facts the text states in words.

Each ticket is a few sentences of prose in one of several voices. Three facts are stated, each in
one of several paraphrases and in a shuffled order, among sentences that carry nothing:

* scope of impact: one person, a team, or every customer;
* workaround: whether one exists (and, if so, what it is);
* category: outage, billing, security, or a feature request.

The latent rule (what a model has to learn; no single fact decides, nor any single word):

    severity = 2 * [scope is everyone] + [scope is a team] + 2 * [security] + [outage] - [feature request]
    label = P1 if no workaround and severity >= 2, P3 if severity <= 0 or (workaround and severity <= 1), else P2

`noise` of the labels are replaced by a uniformly drawn other label.

    rows = generate(600, seed=7)      # [{"id": "tk-7-00000", "text": "...", "label": "P2"}, ...]
"""

from __future__ import annotations

import random

LABELS = ["P1", "P2", "P3"]
INSTRUCTION = "Classify the support ticket's priority as P1, P2 or P3. Answer with the label only."

_PRODUCTS = ["the dashboard", "the mobile app", "the export service", "the invoicing module", "the API", "single sign-on", "the scheduler"]
_SCOPE = {
    "one": [
        "Only I seem to be affected.",
        "It happens on my account; my colleagues are fine.",
        "As far as I can tell it is just me.",
        "One user on our side reports this.",
        "Nobody else on the team has seen it.",
    ],
    "team": [
        "Our whole team of about {n} people is affected.",
        "Everyone in the {dept} department sees the same thing.",
        "It hits all {n} of us in the {dept} group.",
        "Several colleagues in {dept} report it too.",
    ],
    "all": [
        "Every customer we spoke to is affected.",
        "Our status page shows it for all regions.",
        "All of our users are hitting this.",
        "Support is flooded: it seems to affect everybody.",
        "It is happening across every account we checked.",
    ],
}
_WORKAROUND = {
    True: [
        "For now we get by {how}.",
        "There is a way around it: {how}.",
        "We can still work {how}, so it is not blocking.",
        "Temporarily we manage {how}.",
    ],
    False: [
        "We have found no way around it.",
        "Nothing we tried gets us past it.",
        "There is no workaround that we know of.",
        "We are completely stuck until it is fixed.",
    ],
}
_HOW = [
    "by exporting to CSV by hand",
    "by using the old web page",
    "through the desktop client",
    "by retrying after a few minutes",
    "with a manual approval from an admin",
]
_CATEGORY = {
    "outage": [
        "{product} does not load at all.",
        "{product} returns a server error on every request.",
        "{product} has been down since this morning.",
    ],
    "billing": [
        "We were charged twice on the last invoice.",
        "The invoice total does not match the order.",
        "Our card was billed for a plan we cancelled.",
    ],
    "security": [
        "Someone logged into an account from an unknown country.",
        "A password reset email arrived that nobody requested.",
        "{product} shows data from another company.",
    ],
    "feature": [
        "It would be great if {product} could sort by date.",
        "Could you add a dark mode to {product}?",
        "We would like {product} to export to PDF.",
    ],
}
_FILLER = [
    "Thanks in advance.",
    "Let me know if you need logs.",
    "We are on the business plan.",
    "Happy to jump on a call.",
    "This started after the weekend.",
    "Screenshots are attached.",
    "Our admin is cc'd.",
]
_OPENERS = ["Hello,", "Hi team,", "Good morning.", "Dear support,", ""]
_DEPTS = ["finance", "sales", "operations", "marketing", "engineering"]


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def priority(scope: str, workaround: bool, category: str) -> str:
    severity = 2 * (scope == "all") + (scope == "team") + 2 * (category == "security") + (category == "outage") - (category == "feature")
    if not workaround and severity >= 2:
        return "P1"
    if severity <= 0 or (workaround and severity <= 1):
        return "P3"
    return "P2"


def generate(n: int, seed: int = 7, noise: float = 0.03) -> list[dict]:
    """`n` tickets of {id, text, label}; the same seed always gives the same tickets."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        scope, workaround = rng.choice(list(_SCOPE)), rng.random() < 0.5
        category = rng.choice(list(_CATEGORY))
        product = rng.choice(_PRODUCTS)
        facts = [
            rng.choice(_SCOPE[scope]).format(n=rng.randint(4, 40), dept=rng.choice(_DEPTS)),
            rng.choice(_WORKAROUND[workaround]).format(how=rng.choice(_HOW)),
            _sentence(rng.choice(_CATEGORY[category]).format(product=product)),
        ]
        rng.shuffle(facts)
        sentences = [rng.choice(_OPENERS)] + facts + rng.sample(_FILLER, rng.randint(0, 2))
        label = priority(scope, workaround, category)
        if rng.random() < noise:
            label = rng.choice([other for other in LABELS if other != label])
        rows.append({"id": f"tk-{seed}-{i:05d}", "text": " ".join(s for s in sentences if s), "label": label})
    return rows
