"""The tickets demo: seeded, all three labels common, and no single fact decides the priority."""

from collections import Counter

from demos import tickets


def test_the_same_seed_gives_the_same_tickets():
    assert tickets.generate(20, seed=3) == tickets.generate(20, seed=3) != tickets.generate(20, seed=4)


def test_every_label_is_common():
    counts = Counter(r["label"] for r in tickets.generate(3000, seed=7))
    assert min(counts.values()) > 0.2 * 3000


def test_no_single_fact_decides_the_priority():
    facts = [(s, w, c) for s in ("one", "team", "all") for w in (True, False) for c in ("outage", "billing", "security", "feature")]
    for index in range(3):
        for value in {f[index] for f in facts}:
            assert len({tickets.priority(*f) for f in facts if f[index] == value}) > 1, (index, value)
