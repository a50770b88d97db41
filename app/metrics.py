"""Prometheus metrics (prometheus-client), served at GET /metrics.

One process: the values live in this process's REGISTRY. Several workers (`python -m app` with
DIGITSUM_WORKERS > 1): prometheus-client's multiprocess mode. Each worker writes its values to
files in PROMETHEUS_MULTIPROC_DIR (the launcher makes that directory, app/__main__.py), and a
scrape, whichever worker answers it, reads all of them (`instance_registry`): counters and
histograms summed over the workers, past and present; each gauge by the mode given below.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

REGISTRY = CollectorRegistry(auto_describe=True)


def multiprocess_mode() -> bool:
    """Whether values go to files shared by the workers (prometheus-client decides this from the
    same variable, when it is imported)."""
    return bool(os.environ.get(MULTIPROC_DIR_ENV))


def instance_registry() -> CollectorRegistry:
    """What a scrape reports: this process's registry, or, in multiprocess mode, every worker's
    files merged (a fresh registry per scrape, as prometheus-client's documentation has it)."""
    if not multiprocess_mode():
        return REGISTRY
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
    return merged


def mark_worker_gone() -> None:
    """On a worker's way out: its live gauges (queue depth, readiness) stop counting."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


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
# Each worker has its own queue: the instance's depth is their sum, over live workers only.
QUEUE_DEPTH = Gauge(
    "digitsum_queue_depth",
    "Images waiting for the model",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
# Work in flight beyond the model's queue (app/admission.py), read at each scrape.
REQUESTS_IN_FLIGHT = Gauge(
    "digitsum_requests_in_flight",
    "Requests with a body being read or answered",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
BODY_BYTES_IN_FLIGHT = Gauge(
    "digitsum_body_bytes_in_flight",
    "Bytes of request bodies being read or held by requests in flight",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
DECODE_QUEUE = Gauge(
    "digitsum_decode_queue",
    "Images waiting for or in the decoding pool",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
PREDICTIONS = Counter(
    "digitsum_predictions_total",
    "Predictions made, by predicted digit",
    ["digit"],
    registry=REGISTRY,
)
ERRORS = Counter("digitsum_errors_total", "Error answers, by code", ["code"], registry=REGISTRY)
INTERNAL_ERRORS = Counter(
    "digitsum_internal_errors_total",
    "Our own failures, answered 500, by stage: prepare (decoding and reading one image) and"
    " forward (one image's forward pass) fail that input alone; batch (the batcher's own step)"
    " fails its batch; request (anything else) fails its request",
    ["stage"],
    registry=REGISTRY,
)
# The instance is ready when every live worker is: the least of them, so a worker that is still
# loading (or restarting, or draining) shows as 0 rather than being hidden by the others.
READY = Gauge(
    "digitsum_ready",
    "1 when the model is loaded, warm and not draining (in every worker)",
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
