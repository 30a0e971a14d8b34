"""Prometheus metrics: one registry per app, so two apps in one process count apart."""

from prometheus_client import generate_latest

from core.serving.counters import ServiceMetrics


def test_two_apps_count_apart_and_expose_what_they_counted():
    first, second = ServiceMetrics(), ServiceMetrics()  # a shared default registry would refuse the second's names
    first.requests.labels(route="/v1/chat/completions", status="200").inc(3)
    first.refused.labels(lane="classify", reason="queue_full").inc()
    text = generate_latest(first.registry).decode()
    assert 'distill_slm_requests_total{route="/v1/chat/completions",status="200"} 3.0' in text
    assert 'distill_slm_refused_total{lane="classify",reason="queue_full"} 1.0' in text
    assert "distill_slm_requests_total{" not in generate_latest(second.registry).decode()
    assert "process_resident_memory_bytes" in text
