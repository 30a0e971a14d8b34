"""Prometheus metrics, one registry per app (so several apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, cpu seconds, ...
        self.requests = Counter(
            "distill_slm_requests_total", "HTTP requests by route template and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "distill_slm_inference_seconds",
            "model time per answered request",
            ["task", "variant", "adapter"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "distill_slm_batch_size",
            "requests answered together: one forward (classification) or one batched decode (extraction)",
            ["task", "variant"],
            buckets=(1, 2, 4, 8, 16, 32),
            registry=self.registry,
        )
        self.escalations = Counter(
            "distill_slm_escalations_total", "auto requests by the tier that answered", ["task", "tier"], registry=self.registry
        )
        self.adapter_load = Gauge(
            "distill_slm_adapter_load_seconds", "time to load each served adapter", ["adapter"], registry=self.registry
        )
