"""The verdict: the smallest p-value, Bonferroni-corrected over the tests that ran, against p_drift and p_warn."""

from core.drift.statistics import Signal
from core.drift.verdict import verdict


def signal(name: str, p: float | None) -> Signal:
    return Signal(name=name, statistic=0.0, p_value=p)


def test_the_correction_counts_every_test_that_ran():
    # 0.004 alone is drift at p_drift 0.01; beside four other tests it is 0.02 corrected: a warning.
    assert verdict([signal("mmd", 0.004)], 0.05, 0.01, window_n=500, min_requests=100)[0] == "drift"
    status, reasons = verdict([signal("mmd", 0.004), *(signal(f"t{i}", 0.9) for i in range(4))], 0.05, 0.01, 500, 100)
    assert status == "warn" and reasons == ["mmd: corrected p 0.02 < p_warn 0.05"]
    assert verdict([signal("mmd", 0.5), signal("untested", None)], 0.05, 0.01, 500, 100) == ("ok", [])


def test_too_few_requests_or_no_test_draws_no_verdict():
    status, [reason] = verdict([signal("mmd", 1e-9)], 0.05, 0.01, window_n=20, min_requests=100)
    assert status == "ok" and "fewer than drift.min_requests (100)" in reason
    assert verdict([signal("mmd", None)], 0.05, 0.01, 500, 100) == ("ok", ["no test could run"])
