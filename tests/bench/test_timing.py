"""The benchmarks' shared timings."""

from bench.timing import p50_ms, timed


def test_timed_returns_the_result_beside_its_seconds():
    result, seconds = timed(lambda: sum(range(1000)))
    assert result == 499500 and isinstance(seconds, float) and seconds >= 0


def test_p50_asks_one_text_at_a_time():
    calls = []
    assert p50_ms(calls.append, ["a", "b", "c"]) >= 0
    assert calls == [["a"], ["b"], ["c"]]
