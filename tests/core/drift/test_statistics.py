"""Drift's two-sample tests on data whose answer is known: the same distribution is not flagged, a shifted one is."""

from collections import Counter

import numpy as np

from core.drift.statistics import counts_test, ks_test, mmd_test, oov_test, proportion_test, wilson


def test_mmd_tells_a_shifted_cloud_from_a_second_sample_of_the_same():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(80, 8))
    _, same = mmd_test(reference, rng.normal(size=(80, 8)), permutations=200, rng=rng)
    _, shifted = mmd_test(reference, rng.normal(loc=0.8, size=(80, 8)), permutations=200, rng=rng)
    assert same > 0.05 and shifted < 0.01


def test_new_words_are_flagged_and_the_reference_vocabulary_is_not():
    rng = np.random.default_rng(1)
    reference = [f"payment for order {w}" for w in ["apple", "pear", "plum", "fig"] * 10]
    _, same = oov_test(reference, reference[:20], permutations=200, rng=rng)
    _, new = oov_test(reference, [f"kernel panic in module {w}" for w in ["usb", "gpu", "net", "disk"] * 5], 200, rng)
    assert same > 0.05 and new < 0.01


def test_lengths_labels_and_rates_that_moved_have_small_p_values():
    rng = np.random.default_rng(2)
    assert ks_test(list(rng.normal(size=200)), list(rng.normal(size=200)))[1] > 0.05
    assert ks_test(list(rng.normal(size=200)), list(rng.normal(2, size=200)))[1] < 1e-6
    _, p_same, js_same = counts_test(Counter(a=50, b=50), Counter(a=48, b=52), ["a", "b", "c"])
    _, p_moved, js_moved = counts_test(Counter(a=50, b=50), Counter(a=90, b=10), ["a", "b", "c"])
    assert p_same > 0.5 and p_moved < 1e-6 and js_moved > js_same
    assert counts_test(Counter(a=5), Counter(a=9), ["a", "b"]) == (0.0, 1.0, 0.0)  # one category: nothing to test
    assert proportion_test(90, 100, 60, 100, lower_only=True) < 1e-4
    assert proportion_test(60, 100, 90, 100, lower_only=True) > 0.5  # a rate that rose has not fallen


def test_the_wilson_interval_holds_the_proportion_and_narrows_with_more_rows():
    low, high = wilson(8, 10)
    wide = high - low
    assert low < 0.8 < high and 0 <= low and high <= 1
    low, high = wilson(800, 1000)
    assert low < 0.8 < high and high - low < wide / 5
    assert wilson(0, 0) == (0.0, 1.0)
