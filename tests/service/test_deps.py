"""The routes' dependencies: keys as callers present them, key ids fit for an audit log, the per-caller rate limit with
bounded memory, and who may send code to run."""

import pytest
from fastapi import HTTPException

from core.settings import ServiceSettings
from service.deps import RateLimiter, _presented_key, key_id, may_verify, presented_key_id


def test_a_key_is_read_from_x_api_key_first_then_a_bearer_token_and_nothing_else():
    assert _presented_key("k1", "Bearer k2") == "k1"
    assert _presented_key(None, "Bearer  k2 ") == "k2"
    assert _presented_key(None, "bearer k2") == "k2"  # the scheme is case-insensitive
    assert _presented_key(None, "Basic dXNlcjpwYXNz") is None and _presented_key(None, None) is None


def test_a_key_id_is_stable_distinct_and_never_the_key():
    secret = "sk-live-0123456789abcdef"
    ident = key_id(secret)
    assert ident == key_id(secret) == presented_key_id(None, f"Bearer {secret}")
    assert ident != key_id(secret + "x") and secret not in ident and "0123456789" not in ident
    assert key_id(None) == key_id("") == "anonymous"


def test_a_caller_gets_its_burst_then_waits_for_the_rate_and_others_are_not_held_back():
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.retry_after("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.retry_after("a")
    assert 0 < wait <= 0.5  # one token comes back every 1/rate = 0.5 s
    assert limiter.retry_after("b") == 0.0  # another caller's bucket is full


def test_a_flood_of_new_callers_keeps_only_the_most_recent_buckets():
    limiter = RateLimiter(rate=0.001, burst=1, callers=3)
    assert limiter.retry_after("first") == 0.0 and limiter.retry_after("first") > 0
    for caller in ("b", "c", "d"):
        limiter.retry_after(caller)
    assert len(limiter._buckets) == 3 and "first" not in limiter._buckets
    assert limiter.retry_after("first") == 0.0  # forgotten, so a fresh bucket: memory stays bounded, not the rate


def test_sending_tests_needs_the_task_enabled_and_a_key_allowed_to():
    settings = ServiceSettings(verify_tasks=["py"], verify_api_keys=["runner"], client_api_keys=["client"])
    may_verify(settings, "py", "runner", None)
    may_verify(settings, "py", None, "Bearer runner")
    for task, key, reason in (("other", "runner", "off for task 'other'"), ("py", "client", "this key may not"), ("py", None, "may not")):
        with pytest.raises(HTTPException) as exc:
            may_verify(settings, task, key, None)
        assert exc.value.status_code == 403 and reason in exc.value.detail and exc.value.detail.startswith("tests:")
