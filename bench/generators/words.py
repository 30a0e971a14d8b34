"""Shared helpers of the generators: numbers in words, noisy labels, sentence assembly."""

from __future__ import annotations

import random

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def in_words(n: int) -> str:
    """0 <= n < 1,000,000 in English words: 47 -> "forty-seven", 1250 -> "one thousand two hundred fifty"."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + in_words(n % 100))
    return in_words(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + in_words(n % 1000))


def number(rng: random.Random, n: int, words: float = 0.4) -> str:
    """`n` in digits (with thousands separators above 9,999) or, with probability `words`, in words."""
    if rng.random() < words:
        return in_words(n)
    return f"{n:,}" if n >= 10000 else str(n)


def noisy(rng: random.Random, label: str, labels: list[str], noise: float) -> str:
    """`label`, or with probability `noise` a uniformly drawn other label (annotator error)."""
    if rng.random() < noise:
        return rng.choice([other for other in labels if other != label])
    return label


def join(rng: random.Random, facts: list[str], filler: list[str], opener: list[str], max_filler: int = 2) -> str:
    """Facts in a shuffled order among up to `max_filler` sentences that carry nothing."""
    facts = list(facts)
    rng.shuffle(facts)
    parts = [rng.choice(opener)] + facts
    for sentence in rng.sample(filler, rng.randint(0, min(max_filler, len(filler)))):
        parts.insert(rng.randint(1, len(parts)), sentence)
    return " ".join(p for p in parts if p)
