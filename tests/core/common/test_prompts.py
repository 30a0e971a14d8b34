"""Prompts and reading a label out of free text."""

from core.common.prompts import parse_label


def test_parse_label_prefers_exact_then_earliest():
    labels = ["Good", "Standard", "Bad"]
    assert parse_label(" Standard.", labels) == "Standard"
    assert parse_label("It is bad, not good", labels) == "Bad"
    assert parse_label("no idea", labels) is None
