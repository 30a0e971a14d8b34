"""Numbers written in words, as the generators state some facts."""

from bench.generators.words import in_words


def test_numbers_in_words():
    assert [in_words(n) for n in (0, 13, 47, 100, 1250, 36000)] == [
        "zero",
        "thirteen",
        "forty-seven",
        "one hundred",
        "one thousand two hundred fifty",
        "thirty-six thousand",
    ]
