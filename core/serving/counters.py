"""Prometheus metrics, one registry per app (so several apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector


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
        self.refused = Counter(
            "distill_slm_refused_total",
            "requests refused before any model work: full lane (queue_full), caller over its rate (rate_limited)",
            ["lane", "reason"],
            registry=self.registry,
        )
        self.in_flight = Gauge("distill_slm_in_flight", "requests admitted and not yet answered, by lane", ["lane"], registry=self.registry)
        self.serving = Info(
            "distill_slm_serving", "how this process serves: decode path in force, sandbox isolation", registry=self.registry
        )
        self.http_seconds = Histogram(
            "distill_slm_http_seconds",
            "time from a request's arrival to its answer, in the service (a refusal's cost; health under load)",
            ["route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
