"""Prometheus metrics (prometheus-client), one registry per process, served at GET /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

REQUESTS = Counter(
    "digitsum_requests_total",
    "HTTP requests answered",
    ["route", "method", "status"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "digitsum_request_duration_seconds",
    "Time from request start to the last byte sent",
    ["route", "method", "status"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
INFERENCE_SECONDS = Histogram(
    "digitsum_inference_seconds",
    "Forward pass of one batch, copies included",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
PREPROCESS_SECONDS = Histogram(
    "digitsum_preprocess_seconds",
    "Decoding and normalising uploads: a batch's small PNGs on the model thread, or a chunk of"
    " larger images in the preprocessing pool",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
QUEUE_WAIT_SECONDS = Histogram(
    "digitsum_queue_wait_seconds",
    "Time an image waited for its batch to start",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "digitsum_batch_size",
    "Images per forward pass",
    buckets=_BATCH_BUCKETS,
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("digitsum_queue_depth", "Images waiting for the model", registry=REGISTRY)
PREDICTIONS = Counter(
    "digitsum_predictions_total",
    "Predictions made, by predicted digit",
    ["digit"],
    registry=REGISTRY,
)
ERRORS = Counter("digitsum_errors_total", "Error answers, by code", ["code"], registry=REGISTRY)
READY = Gauge(
    "digitsum_ready", "1 when the model is loaded, warm and not draining", registry=REGISTRY
)
