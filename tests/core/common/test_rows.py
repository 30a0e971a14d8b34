"""Rows and the keys derived from them: stable across processes and orders where they must be, different where not."""

from core.common.rows import Example, json_sha256, rows_fingerprint, text_sha256


def test_to_dict_leaves_out_what_a_row_does_not_carry():
    assert Example("r1", "text", "Good").to_dict() == {"id": "r1", "text": "text", "label": "Good"}
    assert Example("r2", "def f(): ...", "code", tests="assert f() is None").to_dict()["tests"] == "assert f() is None"


def test_keys_are_stable_and_tell_values_apart():
    import hashlib

    assert text_sha256("é") == hashlib.sha256("é".encode()).hexdigest()  # UTF-8, as every process hashes it
    assert text_sha256("a") != text_sha256("a ")
    assert json_sha256({"b": 1, "a": [1, 2]}) == json_sha256({"a": [1, 2], "b": 1})  # key order does not matter
    assert json_sha256({"a": [1, 2]}) != json_sha256({"a": [2, 1]})  # list order does
    assert len(json_sha256({"a": 1}, 12)) == 12 and json_sha256({"a": 1}).startswith(json_sha256({"a": 1}, 12))


def test_a_fingerprint_sees_order_and_every_field():
    rows = [Example("1", "x", "Good"), Example("2", "y", "Bad")]
    assert rows_fingerprint(rows) == rows_fingerprint([Example("1", "x", "Good"), Example("2", "y", "Bad")])
    assert rows_fingerprint(rows) != rows_fingerprint(rows[::-1])
    assert rows_fingerprint(rows) != rows_fingerprint([Example("1", "x", "Bad"), Example("2", "y", "Bad")])
