"""Prometheus metrics of one server (its own registry, so several servers in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# seconds: from a fraction of a millisecond (a cached 8x8 digit) to the request timeout
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("vitkit_requests", "Requests by route and status code", ["route", "status"], registry=r)
        self.decode = Histogram(
            "vitkit_decode_seconds", "Decoding and preprocessing one image", buckets=BUCKETS, registry=r
        )
        self.queue = Histogram("vitkit_queue_seconds", "Wait for the model, per image", buckets=BUCKETS, registry=r)
        self.inference = Histogram("vitkit_inference_seconds", "One model call (a batch)", buckets=BUCKETS, registry=r)
        self.total = Histogram(
            "vitkit_request_seconds", "Whole request, by route", ["route"], buckets=BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "vitkit_batch_size", "Images per model call", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r
        )
        self.in_flight = Gauge("vitkit_requests_in_flight", "Requests being decoded, queued or run", registry=r)

    def batch(self, size: int, inference_s: float, waits: list[float]) -> None:
        self.batch_size.observe(size)
        self.inference.observe(inference_s)
        for wait in waits:
            self.queue.observe(wait)

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.total.labels(route).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
