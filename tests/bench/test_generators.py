"""The generalisation protocol's two halves (each generator's rows: tests/bench/generators/)."""

from collections import Counter

from bench.generators import DEVELOPMENT, GENERATORS, HELD_OUT


def test_the_halves_are_disjoint_and_varied():
    assert not set(DEVELOPMENT) & set(HELD_OUT) and len(GENERATORS) >= 8
    for half in (DEVELOPMENT, HELD_OUT):
        kinds = Counter(demo.type for demo in half.values())
        assert kinds["idp"] >= 1 and kinds["classification"] >= 3
    sizes = {len(demo.labels) for demo in GENERATORS.values() if demo.labels}
    assert min(sizes) == 2 and max(sizes) == 8
    prefixed = [d.name for d in GENERATORS.values() if d.labels and any(a != b and b.startswith(a) for a in d.labels for b in d.labels)]
    assert prefixed  # one label begins another somewhere (claims: pay / pay-partial)
